"""ENTSO-E day-ahead exports: local times to UTC, publication at noon of D-1, and alignment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from kapell.api.errors import KapellError, NotFoundError
from kapell.bench.carbon import load_grid, load_series
from kapell.observe.grid_forecasts import read_entsoe_folder

SHARED = Path(__file__).resolve().parents[3] / "../shared/data"
GRID = SHARED / "grid-forecasts/entsoe-de-lu"
GER = SHARED / "carbon-intensity/lets-wait-awhile/ger_ci.csv"

GEN_HEADER = (
    '"MTU (CET/CEST)","Generation - Solar  [MW] Day Ahead/ BZN|DE-LU",'
    '"Generation - Solar [MW] Intraday / BZN|DE-LU","Generation - Wind Offshore  [MW] Day Ahead/ '
    'BZN|DE-LU","Generation - Wind Onshore  [MW] Day Ahead/ BZN|DE-LU"\n'
)
LOAD_HEADER = (
    '"Time (CET/CEST)","Day-ahead Total Load Forecast [MW] - BZN|DE-LU",'
    '"Actual Total Load [MW] - BZN|DE-LU"\n'
)


def _export(tmp_path: Path, starts: list[str], load: list[str]) -> Path:
    gen = "".join(f'"{s} - x","100","7","10","20"\n' for s in starts)
    loads = "".join(f'"{s} - x","{v}","1"\n' for s, v in zip(starts, load, strict=True))
    (tmp_path / "generation_forecast_2020.csv").write_text(GEN_HEADER + gen, encoding="utf-8")
    (tmp_path / "load_2020.csv").write_text(LOAD_HEADER + loads, encoding="utf-8")
    return tmp_path


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_october_repeat_is_winter_time_and_publication_is_noon_the_day_before(
    tmp_path: Path,
) -> None:
    starts = ["25.10.2020 02:00", "25.10.2020 02:15", "25.10.2020 02:00", "25.10.2020 02:15"]
    grid = read_entsoe_folder(_export(tmp_path, starts, ["1", "n/e", "3", ""]))
    assert grid.zone == "DE-LU"
    assert grid.times_s[0] == _utc("2020-10-25 00:00")  # CEST, UTC+2
    assert grid.times_s[2] == _utc("2020-10-25 01:00")  # CET, UTC+1
    assert set(grid.published_s) == {_utc("2020-10-24 10:00")}  # noon CEST on the 24th
    assert grid.load_mw[0] == 1.0 and np.isnan(grid.load_mw[1]) and np.isnan(grid.load_mw[3])
    assert grid.wind_mw[0] == 30.0 and grid.solar_mw[0] == 100.0


def test_bad_rows_name_the_file_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(KapellError, match=r"load_2020.csv:3: Day-ahead Total Load.*'lots'"):
        read_entsoe_folder(_export(tmp_path, ["01.01.2020 00:00", "01.01.2020 00:15"],
                                   ["1", "lots"]))  # fmt: skip
    with pytest.raises(NotFoundError, match="no such grid-forecast folder"):
        read_entsoe_folder(tmp_path / "absent")


@pytest.mark.skipif(not GER.is_file() or not GRID.is_dir(), reason="shared data not present")
def test_published_forecasts_line_up_with_the_intensity_in_utc() -> None:
    """Residual-load share tracks intensity best with no shift, and solar peaks at its trough."""
    grid = load_grid(GRID)
    series = load_series([GER])[0]
    offset = grid.start_h - series.start_h
    intensity = series.values[offset : offset + len(grid.load_mw)]
    share = (grid.load_mw - grid.solar_mw - grid.wind_mw) / grid.load_mw

    def corr(lag: int) -> float:
        a = intensity[max(0, lag) : len(intensity) + min(0, lag)]
        b = share[max(0, -lag) : len(share) + min(0, -lag)]
        return float(np.corrcoef(a, b)[0, 1])

    by_lag = {lag: corr(lag) for lag in range(-3, 4)}
    assert max(by_lag, key=by_lag.__getitem__) == 0
    assert by_lag[0] > 0.8
    hour = (np.arange(len(intensity)) + grid.start_h) % 24
    solar = [grid.solar_mw[hour == h].mean() for h in range(24)]
    mean_ci = [intensity[hour == h].mean() for h in range(24)]
    assert int(np.argmax(solar)) == int(np.argmin(mean_ci))
