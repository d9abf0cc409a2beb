"""Online spot policies: given what a job knows now, run on spot, on on-demand, or wait.

Every policy is a pure function of ``JobState``; none sees the future. Each states its
preference and ``guarded`` overrules it with on-demand whenever anything else could miss the
deadline, so every policy here meets it under any availability sequence (as long as
``work + restart overhead <= deadline``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Capacity(StrEnum):
    """What the job runs on during the next interval."""

    SPOT = "spot"
    ON_DEMAND = "on_demand"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class JobState:
    """What a job knows at a decision point; times in seconds from the job's submission.

    ``running`` is the capacity the job holds now (``WAIT`` after a preemption or while idle),
    ``overhead_left_s`` the part of its restart overhead not yet paid on that capacity, and
    ``interval_s`` how long the coming decision holds (the next decision point),
    ``spot_up_s`` for how long spot has been up without a break (0 while it is down),
    ``spot_runs_s`` the lengths of the spot-up periods seen end since submission, and
    ``price_ratio`` the on-demand price over the spot price.
    """

    elapsed_s: float
    work_s: float
    work_left_s: float
    deadline_s: float
    restart_overhead_s: float
    interval_s: float
    running: Capacity
    overhead_left_s: float
    spot_available: bool
    spot_up_s: float = 0.0
    spot_runs_s: tuple[float, ...] = ()
    price_ratio: float = 3.0

    @property
    def time_left_s(self) -> float:
        return self.deadline_s - self.elapsed_s

    def overhead_on(self, capacity: Capacity) -> float:
        """Overhead still to pay before work progresses on ``capacity``: none left if kept."""
        return self.overhead_left_s if capacity == self.running else self.restart_overhead_s

    def progress_on(self, capacity: Capacity) -> float:
        """Work done in the coming interval on ``capacity`` (spot being up for all of it)."""
        if capacity == Capacity.WAIT:
            return 0.0
        return max(self.interval_s - self.overhead_on(capacity), 0.0)


Policy = Callable[[JobState], Capacity]
Predicate = Callable[[JobState], bool]


def is_safe(state: JobState, choice: Capacity) -> bool:
    """Whether after ``choice`` the job can still finish on on-demand, whatever spot does.

    After the interval the job may have lost its spot instance, so it must then have time for
    the work left plus a fresh restart overhead. On-demand itself is safe when the job holds it
    (or could start it) with time for the work left: the invariant the other choices keep.
    """
    if choice == Capacity.ON_DEMAND:
        return state.work_left_s + state.overhead_on(choice) <= state.time_left_s
    left_after = state.work_left_s - state.progress_on(choice)
    if left_after <= 0:
        return True
    return left_after + state.restart_overhead_s <= state.time_left_s - state.interval_s


def guarded(state: JobState, preferred: Capacity) -> Capacity:
    """``preferred`` if it is available and keeps the deadline safe, else on-demand."""
    if preferred == Capacity.SPOT and not state.spot_available:
        preferred = Capacity.WAIT
    return preferred if is_safe(state, preferred) else Capacity.ON_DEMAND


def on_demand_only(state: JobState) -> Capacity:
    """The baseline: on-demand from start to finish."""
    return Capacity.ON_DEMAND


def greedy(state: JobState) -> Capacity:
    """Spot whenever it is up, wait when it is not, on-demand once the slack is gone.

    Once forced onto on-demand the slack stays gone (time and work shrink together), so the
    job stays there: the Greedy policy of Wu et al.
    """
    return guarded(state, Capacity.SPOT)


def expected_progress_s(state: JobState, at_s: float) -> float:
    """Work done by ``at_s`` at the uniform rate that ends exactly at the deadline."""
    return at_s * state.work_s / state.deadline_s


def uniform_progress(state: JobState) -> Capacity:
    """Uniform Progress (Wu et al., NSDI 2024, section 5), the policy of SkyPilot's managed jobs.

    1. Exploitation: spot whenever it is up (even when behind).
    2. Uniform progress: when spot is down and the work done is behind the uniform line,
       on-demand.
    3. Hysteresis: once on on-demand, stay until the work done reaches the line ``2d`` ahead.
    4. Safety net: when the slack is under ``2d``, on-demand to the end.
    """
    return _progress_rules(state, hysteresis_restarts=2, leave_on_demand_for=lambda s: True)


KAPELL_HYSTERESIS_RESTARTS = 64
"""On-demand is given up for idling only this many restart overheads ahead of the line."""


def kapell(state: JobState) -> Capacity:
    """Uniform Progress without its two ways of paying restarts for nothing.

    - It leaves on-demand for spot only when the spot period now under way is expected to
      last long enough to repay the two restarts a short one costs (``worth_leaving_on_demand``).
    - Once on on-demand it does not go idle until far ahead of the uniform line: on the
      traces, giving on-demand up for a short lead mostly meant paying a restart to take it
      again minutes later rather than catching spot.
    """
    return _progress_rules(state, KAPELL_HYSTERESIS_RESTARTS, worth_leaving_on_demand)


def worth_leaving_on_demand(state: JobState) -> bool:
    """Whether the spot period under way should outlast what a switch risks.

    The expected rest of the period is the mean of the periods seen that were longer than
    this one has lasted so far (unknown, so worth a try, when none was). A switch from
    on-demand pays a restart on spot and, when spot goes, another on on-demand; it pays off
    when the spot time saved, at ``p - 1`` spot prices an hour, exceeds the ``p`` of the
    restart lost.
    """
    lasted = state.spot_up_s
    longer = [r for r in state.spot_runs_s if r > lasted]
    if not longer:
        return True
    rest = sum(longer) / len(longer) - lasted
    ratio = state.price_ratio
    return rest * (ratio - 1) > ratio * state.restart_overhead_s


def _progress_rules(
    state: JobState, hysteresis_restarts: float, leave_on_demand_for: Predicate
) -> Capacity:
    """The rules of Uniform Progress, with its hysteresis and its exit from on-demand as given."""
    done = state.work_s - state.work_left_s
    d = state.restart_overhead_s
    on_demand = state.running == Capacity.ON_DEMAND
    if state.time_left_s < state.work_left_s + 2 * d and state.running != Capacity.SPOT:
        return Capacity.ON_DEMAND
    if state.spot_available and (not on_demand or leave_on_demand_for(state)):
        return guarded(state, Capacity.SPOT)
    ahead_by = hysteresis_restarts * d if on_demand else 0.0
    if state.spot_available or done < expected_progress_s(state, state.elapsed_s + ahead_by):
        return Capacity.ON_DEMAND
    return guarded(state, Capacity.WAIT)


POLICIES: dict[str, Policy] = {
    "on_demand": on_demand_only,
    "greedy": greedy,
    "uniform_progress": uniform_progress,
    "kapell": kapell,
}
"""The online policies by the names the benchmark reports them under."""
