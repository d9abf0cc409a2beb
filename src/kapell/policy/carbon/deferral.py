"""When a deferrable TrainingJob starts: the carbon planner's choice within its deadline.

The plan is ``planner.plan_on_forecast`` (the optimum the carbon benchmark measures) on the
configured intensity source, for a job of ``expectedDuration`` that must end by its deadline;
the job is held until the plan's first hour. Grams are the plan's hourly intensities times the
job's modelled power (``policy.energy``: its workers' devices at full load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kapell.api.kinds import TrainingJobSpec
from kapell.api.units import parse_quantity
from kapell.policy.carbon.planner import plan_on_forecast
from kapell.policy.carbon.series import HOUR_S, HourlySeries
from kapell.policy.energy import PowerModels, replica_busy_power_w


@dataclass(frozen=True)
class Deferral:
    """The planned start (epoch seconds), and the grams it and an immediate start emit."""

    start_s: float
    planned_g: float
    at_once_g: float

    def holds(self, now_s: float) -> bool:
        """Whether the job should still wait at ``now_s``."""
        return now_s < self.start_s


def job_power_w(spec: TrainingJobSpec, models: PowerModels) -> float:
    """Modelled power of all the job's workers while they train."""
    total = 0.0
    for group in spec.worker_group_specs:
        gpu = group.resources.gpu
        gpu_model = gpu.models[0] if gpu is not None and gpu.models else None
        milli = gpu.milli_gpus if gpu is not None else 0
        cores = parse_quantity(group.resources.cpu)
        total += group.replicas * replica_busy_power_w(models, gpu_model, milli, cores)
    return total


def plan_deferral(
    series: HourlySeries,
    now_s: float,
    deadline_at_s: float,
    duration_s: float,
    power_w: float,
) -> Deferral:
    """The cleanest start from ``now_s`` that still ends by ``deadline_at_s``.

    Planning is hourly (the planner's grid): the job takes ``ceil(duration)`` hours and its
    window closes at the last whole hour that leaves them before the deadline; a job already
    out of slack starts now.
    """
    now_h = int(now_s // HOUR_S)
    duration_h = max(1, math.ceil(duration_s / HOUR_S))
    window_h = max(0, int(deadline_at_s // HOUR_S) - duration_h - now_h)
    made = plan_on_forecast(series, now_h, duration_h, window_h)
    kwh_per_hour = power_w / 1000.0 * (duration_s / HOUR_S) / duration_h
    start_h = made.plan.first[0]
    start_s = now_s if start_h == now_h else start_h * HOUR_S
    return Deferral(
        start_s, made.plan.intensity_sum * kwh_per_hour, made.at_once_sum * kwh_per_hour
    )
