"""Carbon-intensity readings on one hourly grid, and the alignment of several regions.

Sources come at 5, 15, 30 or 60 minutes; planning is hourly (as in Sukprasert et al.), so each
hour's value is the mean of the readings whose timestamp falls in it. Hours are integers,
``floor(epoch_s / 3600)``, so several regions line up by plain index arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kapell.api.errors import KapellError

HOUR_S = 3600.0


@dataclass(frozen=True)
class HourlySeries:
    """Hourly intensity of one region: ``values[i]`` is the mean over hour ``start_h + i``."""

    region: str
    start_h: int
    values: NDArray[np.float64]

    @property
    def end_h(self) -> int:
        return self.start_h + len(self.values)


def to_hourly(region: str, times_s: Sequence[float], values: Sequence[float]) -> HourlySeries:
    """Average readings into hours; hours without a reading take the previous hour's value."""
    if not times_s:
        raise KapellError(f"{region}: no carbon-intensity readings")
    hours = np.floor(np.asarray(times_s, dtype=np.float64) / HOUR_S).astype(np.int64)
    vals = np.asarray(values, dtype=np.float64)
    start = int(hours.min())
    length = int(hours.max()) - start + 1
    sums = np.bincount(hours - start, weights=vals, minlength=length)
    counts = np.bincount(hours - start, minlength=length)
    out = np.empty(length)
    last = float(vals[0])
    for i in range(length):
        if counts[i]:
            last = float(sums[i] / counts[i])
        out[i] = last
    return HourlySeries(region, start, out)


def align(series: Sequence[HourlySeries]) -> list[HourlySeries]:
    """The common hours of several series, each cut to them (same ``start_h`` and length)."""
    start = max(s.start_h for s in series)
    end = min(s.end_h for s in series)
    if end <= start:
        names = ", ".join(s.region for s in series)
        raise KapellError(
            f"carbon-intensity series {names} share no hours; use files of one period"
        )
    return [
        HourlySeries(s.region, start, s.values[start - s.start_h : end - s.start_h]) for s in series
    ]
