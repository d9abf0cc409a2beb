"""Replay one job on a spot availability sequence under an online policy, and price it.

Time advances in intervals of the trace's tick; spot is up or down for a whole tick. A job on
spot when spot goes down is preempted (it holds nothing until it starts again). Every start on
a capacity the job does not hold costs the restart overhead, billed but without progress.
Billing stops when the work is done, mid-tick if need be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kapell.policy.spot.decide import Capacity, JobState, Policy

SPOT_PRICE_PER_H = 0.9731
ON_DEMAND_PRICE_PER_H = 3.06
"""p3.2xlarge (one V100) in us-west-2, the prices the paper's simulator charges (3.1x apart)."""


@dataclass(frozen=True, slots=True)
class SpotJob:
    """A job of ``work_s`` seconds due ``deadline_s`` after submission."""

    work_s: float
    deadline_s: float
    restart_overhead_s: float
    spot_price_per_h: float = SPOT_PRICE_PER_H
    on_demand_price_per_h: float = ON_DEMAND_PRICE_PER_H

    def price_per_s(self, capacity: Capacity) -> float:
        per_h = {
            Capacity.SPOT: self.spot_price_per_h,
            Capacity.ON_DEMAND: self.on_demand_price_per_h,
            Capacity.WAIT: 0.0,
        }[capacity]
        return per_h / 3600.0

    @property
    def on_demand_cost(self) -> float:
        """What the on-demand-only baseline pays: one start, then the work."""
        return (self.work_s + self.restart_overhead_s) * self.price_per_s(Capacity.ON_DEMAND)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a replay cost and whether it finished in time (``finished_s`` is None if not)."""

    cost: float
    finished_s: float | None
    spot_s: float
    on_demand_s: float
    starts: int

    @property
    def met_deadline(self) -> bool:
        return self.finished_s is not None


def replay(policy: Policy, job: SpotJob, spot_up: Sequence[bool], tick_s: float) -> Outcome:
    """Run ``job`` from the first tick of ``spot_up`` until done or the deadline."""
    work_left = job.work_s
    running, overhead_left = Capacity.WAIT, 0.0
    cost = spot_s = on_demand_s = 0.0
    starts = 0
    elapsed = spot_up_s = 0.0
    runs: tuple[float, ...] = ()
    for up in spot_up:
        interval = min(tick_s, job.deadline_s - elapsed)
        if interval <= 0:
            break
        if not up:
            runs += (spot_up_s,) if spot_up_s > 0 else ()
            spot_up_s = 0.0
            if running == Capacity.SPOT:
                running, overhead_left = Capacity.WAIT, 0.0
        state = JobState(
            elapsed, job.work_s, work_left, job.deadline_s, job.restart_overhead_s,
            interval, running, overhead_left, up, spot_up_s, runs,
            job.on_demand_price_per_h / job.spot_price_per_h,
        )  # fmt: skip
        spot_up_s += interval if up else 0.0
        choice = policy(state)
        if choice == Capacity.SPOT and not up:
            raise ValueError(f"policy chose spot at {elapsed}s while spot is down")
        if choice != running:
            starts += choice != Capacity.WAIT
            overhead_left = job.restart_overhead_s
        running = choice
        if choice == Capacity.WAIT:
            elapsed += interval
            continue
        paid = min(overhead_left, interval)
        used = paid + min(interval - paid, work_left)
        overhead_left -= paid
        work_left -= used - paid
        cost += used * job.price_per_s(choice)
        if choice == Capacity.SPOT:
            spot_s += used
        else:
            on_demand_s += used
        if work_left <= 1e-9:
            return Outcome(cost, elapsed + used, spot_s, on_demand_s, starts)
        elapsed += interval
    return Outcome(cost, None, spot_s, on_demand_s, starts)
