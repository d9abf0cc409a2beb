"""``kapell bench spot``: the trace reader, its errors, and the JSON on synthetic and real traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kapell.api.errors import KapellError, NotFoundError
from kapell.bench.spot import read_availability, run_spot_bench
from kapell.bench.traces import TraceError
from kapell.policy.spot.replay import SpotJob

REAL = Path(__file__).parents[3] / "../shared/data/spot-traces/availability/1-node"
NAMES = {"on_demand", "greedy", "uniform_progress", "optimal", "kapell"}


def _write(path: Path, data: list[int], gap: int = 600) -> Path:
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return path


def test_one_means_spot_was_not_available(tmp_path: Path) -> None:
    trace = read_availability(_write(tmp_path / "z.json", [1, 0, 0, 1]))
    assert trace.spot_up.tolist() == [False, True, True, False]
    assert trace.tick_s == 600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"data": [0]}', "expected a JSON object with metadata.gap_seconds and data"),
        ('{"metadata": {"gap_seconds": 0}, "data": [0]}', "metadata.gap_seconds: expected"),
        ('{"metadata": {"gap_seconds": 60}, "data": [0, 2]}', r"data\[1\]: expected 0"),
        ("not json", "expected a JSON object"),
    ],
)
def test_malformed_traces_name_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TraceError, match=message) as err:
        read_availability(path)
    assert str(err.value).startswith(str(path))


def test_missing_trace_and_impossible_deadline_are_user_errors(tmp_path: Path) -> None:
    job = SpotJob(3600, 7200, 600)
    with pytest.raises(NotFoundError, match="not found"):
        run_spot_bench([tmp_path / "nope.json"], job, 1)
    trace = _write(tmp_path / "a.json", [0] * 48)
    with pytest.raises(KapellError, match="--deadline-hours"):
        run_spot_bench([trace], SpotJob(7200, 7500, 600), 1)
    with pytest.raises(KapellError, match="shorter than the deadline"):
        run_spot_bench([_write(tmp_path / "b.json", [0] * 3)], job, 1)


def test_one_file_gives_one_policies_block_a_folder_one_per_trace(tmp_path: Path) -> None:
    _write(tmp_path / "always.json", [0] * 48)
    _write(tmp_path / "never.json", [1] * 48)
    job = SpotJob(3 * 3600, 5 * 3600, 600)
    single = run_spot_bench([tmp_path / "always.json"], job, 1)
    assert set(single["policies"]) == NAMES
    spot = job.spot_price_per_h / job.on_demand_price_per_h
    assert single["policies"]["greedy"]["cost_vs_on_demand"] == pytest.approx(spot, abs=1e-4)
    folder = run_spot_bench([tmp_path], job, 1)
    assert set(folder["traces"]) == {"always", "never"}
    never = folder["traces"]["never"]["policies"]
    assert {p["deadlines_met_pct"] for p in never.values()} == {100.0}
    for name in ("on_demand", "greedy", "kapell", "optimal"):  # no spot: on-demand, one start
        assert never[name]["cost_vs_on_demand"] == 1.0, name
    # Uniform Progress idles whenever it is 2d ahead of its line, so it restarts on-demand
    assert never["uniform_progress"]["cost_vs_on_demand"] > 1.0
    assert folder["summary"]["traces"] == 2


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/spot-traces is absent")
def test_real_trace_every_deadline_met_and_the_optimum_is_cheapest() -> None:
    path = REAL / "aws-10-26-2022" / "us-west-2a_v100_1.json"
    result = run_spot_bench([path], SpotJob(48 * 3600, 52 * 3600, 3 * 60), 48)
    policies = result["policies"]
    assert result["starts"] > 5
    assert {p["deadlines_met_pct"] for p in policies.values()} == {100.0}
    best = policies["optimal"]["cost_vs_on_demand"]
    assert all(best <= p["cost_vs_on_demand"] for p in policies.values())
    assert policies["on_demand"]["cost_vs_on_demand"] == 1.0
