"""What `kapell up` feeds the TrainingJob scheduler: spot availability from a trace or a flag
file, and the intensity source on the planner's hourly grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kapell.api.errors import KapellError
from kapell.cli.training_feeds import intensity_series, spot_availability


def test_a_trace_is_replayed_from_the_start_and_its_last_tick_held(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": [0, 1, 1, 0]}))
    up = spot_availability(trace, started_s=1000.0)
    assert [up(1000.0 + s) for s in (0, 59, 60, 179, 180, 10_000)] == [
        True, True, False, False, True, True,
    ]  # fmt: skip


def test_a_flag_file_is_read_at_every_decision(tmp_path: Path) -> None:
    flag = tmp_path / "spot"
    flag.write_text("up\n")
    up = spot_availability(flag, started_s=0.0)
    assert up(0.0)
    flag.write_text("down\n")
    assert not up(1.0)
    flag.unlink()
    assert not up(2.0)  # unreadable: down (on-demand always meets the deadline)
    with pytest.raises(KapellError, match="no such spot availability file"):
        spot_availability(tmp_path / "missing", 0.0)


def test_a_constant_intensity_is_a_flat_series_from_now() -> None:
    assert intensity_series(None) is None
    series = intensity_series("120")
    assert series is not None
    at = series(7200.5)
    assert at.start_h == 2 and set(at.values) == {120.0} and len(at.values) >= 24 * 7
