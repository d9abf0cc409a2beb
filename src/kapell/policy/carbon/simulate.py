"""Replay a job submitted at every hour of aligned series: forecast policy vs oracle vs at once.

As in Sukprasert et al. (EuroSys 2024), a job of ``job_h`` hours submitted at hour ``r`` may start
as late as ``r + window_h`` (so its deadline is ``r + window_h + job_h``); every hour whose whole
window lies inside the series is one run. Savings are ``1 - sum(emitted) / sum(baseline)`` over
all runs, the baseline being to start at once in the first region. Emissions are counted per kWh
of a constant-power job, so the job's power cancels out of every ratio.

The forecast policy sees, at each hour ``t``, only the row of the forecast matrix made from hours
before ``t``; what it then runs is charged at the true intensity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kapell.api.errors import KapellError
from kapell.policy.carbon.forecast import Array, Forecaster
from kapell.policy.carbon.planner import DeferrableJob, Progress, next_region, plan
from kapell.policy.carbon.series import HourlySeries
from kapell.policy.carbon.stopping import block_error_stats, block_sums, start_now

DECISIONS = ("point", "stopping")
"""``point``: the receding-horizon rule; ``stopping``: optimal stopping on past errors."""

Decide = Callable[[DeferrableJob, int, Progress], str | None]


@dataclass(frozen=True)
class ShiftResult:
    """Totals over every submission hour."""

    runs: int
    baseline: float
    forecast: float
    oracle: float
    deadlines_met: int
    start_delays_h: tuple[int, ...]
    start_regions: tuple[str, ...]

    @property
    def savings_pct(self) -> float:
        return 100.0 * (1.0 - self.forecast / self.baseline) if self.baseline else 0.0

    @property
    def oracle_savings_pct(self) -> float:
        return 100.0 * (1.0 - self.oracle / self.baseline) if self.baseline else 0.0

    def summary(self) -> dict[str, float | int]:
        """The benchmark's JSON fields."""
        oracle = self.oracle_savings_pct
        return {
            "runs": self.runs,
            "savings_pct": round(self.savings_pct, 3),
            "oracle_savings_pct": round(oracle, 3),
            "ratio_to_oracle": round(self.savings_pct / oracle, 4) if oracle else 0.0,
            "deadlines_met_pct": round(100.0 * self.deadlines_met / self.runs, 3)
            if self.runs
            else 0.0,
        }


def _point_rule(forecasts: dict[str, Array]) -> Decide:
    """Re-plan every hour on the newest forecast row; run now if the plan does."""

    def decide(job: DeferrableJob, now: int, progress: Progress) -> str | None:
        row = {r: f[now, : job.deadline_h - now] for r, f in forecasts.items()}
        return next_region(job, now, row, progress)

    return decide


def _stopping_rule(
    truth: dict[str, Array], forecasts: dict[str, Array], job_h: int, width: int
) -> Decide:
    """Optimal stopping for jobs that cannot pause (the point rule for pausable ones)."""
    point = _point_rule(forecasts)
    costs = {r: block_sums(f, job_h, width) for r, f in forecasts.items()}
    stats = {r: block_error_stats(truth[r], f, job_h, width) for r, f in forecasts.items()}
    names = list(forecasts)

    def decide(job: DeferrableJob, now: int, progress: Progress) -> str | None:
        if job.pausable or progress.region is not None:
            return point(job, now, progress)
        starts = job.deadline_h - job.duration_h - now + 1
        mu = np.array([costs[r][now, :starts] - stats[r].mean[now, :starts] for r in names])
        var = np.array([stats[r].var[now, :starts] for r in names])
        best = np.argmin(mu, axis=0)
        lead = np.arange(starts)
        if not start_now(mu[best, lead], var[best, lead], np.zeros(starts)):
            return None
        return names[int(best[0])]

    return decide


def _run_online(
    job: DeferrableJob, truth: dict[str, Array], decide: Decide
) -> tuple[float, int, int, str]:
    """Emissions, finishing hour, first run hour and first region of one job, run online."""
    progress = Progress()
    emitted = 0.0
    first_run = -1
    first_region = ""
    finished = job.deadline_h + 1  # never reached by a correct planner
    for now in range(job.release_h, job.deadline_h):
        region = decide(job, now, progress)
        if region is None:
            continue
        emitted += float(truth[region][now])
        if first_run < 0:
            first_run, first_region = now, region
        progress = Progress(progress.done_h + 1, region)
        if progress.done_h == job.duration_h:
            finished = now + 1
            break
    return emitted, finished, first_run, first_region


def simulate_shifting(
    series: Sequence[HourlySeries],
    job_h: int,
    window_h: int,
    forecaster: Forecaster,
    pausable: bool = False,
    progress: Callable[[int, int], None] | None = None,
    decision: str = "point",
) -> ShiftResult:
    """Every hourly submission over aligned ``series`` (first one is the home region)."""
    if decision not in DECISIONS:
        raise KapellError(
            f"unknown decision rule {decision!r}; choose one of {', '.join(DECISIONS)}"
        )
    truth = {s.region: s.values for s in series}
    horizon = window_h + job_h
    forecasts = {s.region: forecaster.matrix(s.values, horizon) for s in series}
    decide = (
        _point_rule(forecasts)
        if decision == "point"
        else _stopping_rule(truth, forecasts, job_h, window_h + 1)
    )
    home = series[0].values
    n = len(home)
    baseline = oracle = emitted = 0.0
    met = 0
    delays: list[int] = []
    regions: list[str] = []
    submissions = range(n - horizon + 1)
    for i, release in enumerate(submissions):
        job = DeferrableJob(job_h, release, release + horizon, pausable, tuple(truth))
        baseline += float(home[release : release + job_h].sum())
        oracle += plan(job, release, {r: v[release:] for r, v in truth.items()}).intensity_sum
        used, finished, first_run, first_region = _run_online(job, truth, decide)
        emitted += used
        met += finished <= job.deadline_h
        delays.append(first_run - release)
        regions.append(first_region)
        if progress is not None and i % 256 == 0:
            progress(i, len(submissions))
    return ShiftResult(
        len(submissions), baseline, emitted, oracle, met, tuple(delays), tuple(regions)
    )
