"""What ``kapell up`` feeds the TrainingJob scheduler: spot availability and hourly intensity.

Locally there is no cloud to reclaim spot capacity, so availability comes from a file:

- a spot availability trace (``{"metadata": {"gap_seconds": G}, "data": [0 or 1, ...]}``, the
  format of ``kapell bench spot``; 1 means spot is *not* available), replayed from the moment
  ``kapell up`` starts, its last tick held after its end; or
- any other file, read at every decision: ``up`` or ``down`` (a test, or a script watching a
  real provider, flips it). A missing or unreadable file counts as ``down``: on-demand always
  meets the deadline.

The carbon planner is fed the ``--carbon-intensity`` source on its hourly grid: a number is a
flat series (every start is as clean, so nothing waits); a CSV file is read whole and must
cover the deferrable jobs' windows (a recorded year, or a forecast export).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kapell.api.errors import KapellError
from kapell.observe.carbon_sources import read_intensity_csv
from kapell.policy.carbon.series import HOUR_S, HourlySeries, to_hourly

FLAT_SERIES_H = 24 * 31
"""Hours a constant intensity is planned over (longer than any sensible deadline)."""


def spot_availability(path: Path, started_s: float) -> Callable[[float], bool]:
    """Whether spot capacity is up at an epoch second, from ``path`` (see the module doc)."""
    if not path.exists():
        raise KapellError(
            f"{path}: no such spot availability file; write 'up' or 'down' in it, or give a "
            "trace of `kapell bench spot`"
        )
    with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, OSError):
        if isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
            return _replayed(path, started_s)

    def flipped(now_s: float) -> bool:
        try:
            text = path.read_text(encoding="utf-8").strip().lower()
        except OSError:
            return False
        return text == "up"

    return flipped


def _replayed(path: Path, started_s: float) -> Callable[[float], bool]:
    from kapell.bench.spot import read_availability

    trace = read_availability(path)
    if not len(trace.spot_up):
        raise KapellError(f"{path}: the spot availability trace has no ticks")

    def at(now_s: float) -> bool:
        tick = int(max(0.0, now_s - started_s) // trace.tick_s)
        return bool(trace.spot_up[min(tick, len(trace.spot_up) - 1)])

    return at


def intensity_series(option: str | None) -> Callable[[float], HourlySeries] | None:
    """The hourly intensity from ``--carbon-intensity`` (None: no source, nothing deferred)."""
    if option is None:
        return None
    with contextlib.suppress(ValueError):
        constant = float(option)
        return lambda now_s: HourlySeries(
            "constant", int(now_s // HOUR_S), np.full(FLAT_SERIES_H, constant)
        )
    readings = read_intensity_csv(Path(option))
    series = to_hourly(readings.region, readings.times_s, readings.g_per_kwh)
    return lambda now_s: series
