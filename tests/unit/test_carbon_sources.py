"""Carbon-intensity readers: the three CSV formats, the Carbon Aware SDK answer, a constant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kapell.api.errors import KapellError, NotFoundError
from kapell.observe.carbon_sources import (
    constant_intensity,
    parse_carbon_aware_sdk,
    parse_intensity_csv,
    read_intensity_csv,
)
from kapell.policy.carbon.planner import DeferrableJob, plan
from kapell.policy.carbon.series import align, to_hourly

DATA = Path(__file__).resolve().parents[2] / "../shared/data/carbon-intensity"

EM = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
    "Data Source,Data Estimated,Data Estimation Method\n"
    "2022-01-01 00:00:00,Spain,Spain,ES,133.64,175.54,76.35,42.94,entsoe.eu,false,\n"
    "2022-01-01 01:00:00,Spain,Spain,ES,139.1,181.54,75.69,41.62,entsoe.eu,false,\n"
)


def test_electricity_maps_defaults_to_lca_and_offers_direct() -> None:
    lca = parse_intensity_csv(EM, "es.csv")
    direct = parse_intensity_csv(EM, "es.csv", signal="direct")
    assert lca.region == "ES" and lca.g_per_kwh == (175.54, 181.54)
    assert direct.g_per_kwh == (133.64, 139.1)
    assert lca.times_s[1] - lca.times_s[0] == 3600.0
    assert lca.times_s[0] == 1640995200.0  # 2022-01-01T00:00Z
    with pytest.raises(KapellError, match="lca, direct"):
        parse_intensity_csv(EM, "es.csv", signal="marginal")


def test_watttime_five_minute_marginal_averages_into_hours() -> None:
    text = "oootime,Caiso_North\n" + "".join(
        f"2023-06-08 00:{m:02d}:00,{100 + m}\n" for m in range(0, 60, 5)
    )
    readings = parse_intensity_csv(text, "wt.csv")
    assert readings.region == "Caiso_North" and readings.signal == "marginal"
    hourly = to_hourly(readings.region, readings.times_s, readings.g_per_kwh)
    assert len(hourly.values) == 1
    assert hourly.values[0] == pytest.approx(np.mean([100 + m for m in range(0, 60, 5)]))


def test_lets_wait_awhile_takes_its_region_from_the_file_name() -> None:
    text = "Time,Carbon Intensity\n2020-01-01 00:00:00,300\n2020-01-01 00:30:00,100\n"
    readings = parse_intensity_csv(text, "data/gb_ci.csv")
    assert readings.region == "gb_ci" and readings.g_per_kwh == (300.0, 100.0)


def test_unknown_or_broken_csv_is_a_one_line_user_error() -> None:
    with pytest.raises(KapellError, match="unknown carbon-intensity CSV header"):
        parse_intensity_csv("a,b,c\n1,2,3\n", "x.csv")
    with pytest.raises(KapellError, match="unreadable"):
        parse_intensity_csv("Time,Carbon Intensity\nyesterday,5\n", "x.csv")
    with pytest.raises(NotFoundError):
        read_intensity_csv(Path("/nonexistent/ci.csv"))


def test_carbon_aware_sdk_answer_is_sorted_and_filtered_by_location() -> None:
    payload = [
        {"location": "eastus", "time": "2024-01-01T01:00:00Z", "rating": 20.0, "duration": "01:00:00"},
        {"location": "eastus", "time": "2024-01-01T00:00:00Z", "rating": 10.0, "duration": "01:00:00"},
        {"location": "westus", "time": "2024-01-01T00:00:00Z", "rating": 99.0, "duration": "01:00:00"},
    ]  # fmt: skip
    readings = parse_carbon_aware_sdk(payload, "eastus")
    assert readings.g_per_kwh == (10.0, 20.0)
    with pytest.raises(KapellError):
        parse_carbon_aware_sdk({"error": "x"}, "eastus")


def test_constant_and_alignment_of_two_regions() -> None:
    a = constant_intensity("a", 100.0, [h * 3600.0 for h in range(10)])
    b = constant_intensity("b", 50.0, [h * 3600.0 for h in range(5, 20)])
    aligned = align(
        [to_hourly("a", a.times_s, a.g_per_kwh), to_hourly("b", b.times_s, b.g_per_kwh)]
    )
    assert [s.start_h for s in aligned] == [5, 5] and [len(s.values) for s in aligned] == [5, 5]
    far = constant_intensity("c", 1.0, [1e9])
    with pytest.raises(KapellError, match="share no hours"):
        align([aligned[0], to_hourly("c", far.times_s, far.g_per_kwh)])


CAISO = DATA / "electricitymaps/US-CAL-CISO_2022_hourly.csv"


@pytest.mark.skipif(not CAISO.is_file(), reason="shared carbon-intensity data not present")
def test_caiso_2022_matches_provenance_and_the_published_oracle() -> None:
    readings = read_intensity_csv(CAISO)
    series = to_hourly(readings.region, readings.times_s, readings.g_per_kwh)
    assert len(series.values) == 8760
    assert series.values.mean() == pytest.approx(261.3, abs=0.1)  # PROVENANCE.md
    values = series.values
    baseline = oracle = 0.0
    for release in range(len(values) - 25 + 1):
        job = DeferrableJob(1, release, release + 25)
        baseline += values[release]
        oracle += plan(job, release, {"ciso": values[release:]}).intensity_sum
    # Sukprasert et al. (EuroSys 2024): a 1 h job with 24 h slack saves about 32.5% in CAISO 2022
    assert 100 * (1 - oracle / baseline) == pytest.approx(32.5, abs=1.0)
