"""Choose the hours and region a deferrable job runs in, never missing its deadline.

Time is an hour index on the grid of ``series`` (``floor(epoch_s / 3600)`` or any offset of it)
and is always an argument. A job needs ``duration_h`` hours of work between ``release_h`` and
``deadline_h`` (it must have finished when hour ``deadline_h`` begins).

- ``plan`` is the exact optimum for given intensities: with the true ones it is the
  perfect-foresight oracle; with forecasts it is the expected optimum. A job that cannot pause
  runs ``duration_h`` consecutive hours in one region (minimum rolling sum over starts and
  regions); a pausable job runs its cheapest hours, each in the cleanest region of that hour
  (migration between hours is free, Sukprasert et al.'s upper bound).
- ``next_region`` is the online rule: each hour, re-plan on the newest forecast and run now only
  if the plan runs now. Once the slack is gone the plan can only run now, so the deadline holds
  whatever the forecast says.

Ties go to the earliest hour, then to the first region listed, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kapell.api.errors import KapellError
from kapell.policy.carbon.series import HourlySeries

Intensity = Mapping[str, Sequence[float] | NDArray[np.float64]]
"""Intensity per region; element ``i`` is for hour ``now_h + i``."""


@dataclass(frozen=True)
class DeferrableJob:
    """Work that may wait: ``duration_h`` hours between ``release_h`` and ``deadline_h``."""

    duration_h: int
    release_h: int
    deadline_h: int
    pausable: bool = False
    regions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.duration_h < 1:
            raise KapellError(f"job duration must be at least 1 hour, got {self.duration_h}")
        if self.deadline_h - self.release_h < self.duration_h:
            raise KapellError(
                f"job of {self.duration_h} h cannot finish between hour {self.release_h} "
                f"and its deadline {self.deadline_h}; move the deadline later"
            )


@dataclass(frozen=True)
class Progress:
    """How far a job has got: hours done, and the region of a started non-pausable job."""

    done_h: int = 0
    region: str | None = None


@dataclass(frozen=True)
class Plan:
    """Hours the job runs in, each with its region, and the sum of their intensities."""

    slots: tuple[tuple[int, str], ...]
    intensity_sum: float

    @property
    def first(self) -> tuple[int, str]:
        return self.slots[0]


def _regions(job: DeferrableJob, intensity: Intensity) -> list[str]:
    regions = [r for r in (job.regions or tuple(intensity)) if r in intensity]
    if not regions:
        raise KapellError(f"no intensity for any allowed region {list(job.regions)}")
    return regions


def plan(
    job: DeferrableJob,
    now_h: int,
    intensity: Intensity,
    progress: Progress = Progress(),
) -> Plan:
    """The cheapest way to finish from ``now_h``; ``intensity[r][i]`` is for hour ``now_h + i``.

    Each region's list must cover at least ``job.deadline_h - now_h`` hours.
    """
    remaining = job.duration_h - progress.done_h
    if remaining <= 0:
        return Plan((), 0.0)
    span = job.deadline_h - now_h
    if span < remaining:
        raise KapellError(f"job can no longer meet its deadline at hour {now_h}")
    if progress.region is not None and not job.pausable:
        values = np.asarray(intensity[progress.region][:remaining], dtype=np.float64)
        slots = tuple((now_h + i, progress.region) for i in range(remaining))
        return Plan(slots, float(values.sum()))
    regions = _regions(job, intensity)
    grid = np.array([np.asarray(intensity[r][:span], dtype=np.float64) for r in regions])
    if grid.shape[1] < span:
        raise KapellError(f"intensity covers {grid.shape[1]} h, the plan needs {span} h")
    if job.pausable:
        best_region = np.argmin(grid, axis=0)
        cheapest = grid[best_region, np.arange(span)]
        hours = np.sort(np.argsort(cheapest, kind="stable")[:remaining])
        slots = tuple((now_h + int(h), regions[int(best_region[h])]) for h in hours)
        return Plan(slots, float(cheapest[hours].sum()))
    cumulative = np.concatenate([np.zeros((len(regions), 1)), np.cumsum(grid, axis=1)], axis=1)
    window_sums = cumulative[:, remaining:] - cumulative[:, :-remaining]  # [region, start]
    start = int(np.argmin(window_sums.min(axis=0)))
    region = int(np.argmin(window_sums[:, start]))
    slots = tuple((now_h + start + i, regions[region]) for i in range(remaining))
    return Plan(slots, float(window_sums[region, start]))


def next_region(
    job: DeferrableJob,
    now_h: int,
    forecast: Intensity,
    progress: Progress = Progress(),
) -> str | None:
    """The region to run in during hour ``now_h``, or None to wait (receding-horizon rule)."""
    if progress.done_h >= job.duration_h:
        return None
    if progress.region is not None and not job.pausable:
        return progress.region
    hour, region = plan(job, now_h, forecast, progress).first
    return region if hour == now_h else None


@dataclass(frozen=True)
class ForecastPlan:
    """A plan made on a live forecast, with what starting at once would cost on it."""

    job: DeferrableJob
    plan: Plan
    at_once_sum: float


def plan_on_forecast(
    forecast: HourlySeries, now_h: int, duration_h: int, window_h: int, pausable: bool = False
) -> ForecastPlan:
    """Plan a job released at ``now_h`` on one region's forecast.

    Hours between now and the forecast's first hour take its first value; the window shrinks to
    the hours the forecast covers (a service forecasts 24-72 h ahead).
    """
    lead_in = max(0, forecast.start_h - now_h)
    skip = max(0, now_h - forecast.start_h)
    values = np.concatenate([np.full(lead_in, forecast.values[0]), forecast.values[skip:]])
    window = min(window_h, len(values) - duration_h)
    if window < 0:
        raise KapellError(
            f"the {forecast.region} forecast covers {len(values)} h from now, "
            f"less than the {duration_h} h job"
        )
    job = DeferrableJob(duration_h, now_h, now_h + window + duration_h, pausable,
                        (forecast.region,))  # fmt: skip
    chosen = plan(job, now_h, {forecast.region: values})
    return ForecastPlan(job, chosen, float(values[:duration_h].sum()))
