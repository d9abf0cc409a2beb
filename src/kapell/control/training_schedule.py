"""When and on what a TrainingJob runs: the carbon deferral, the trough lender and spot.

The TrainingJob controller asks ``Scheduler.gate`` each reconcile, before it starts a run or
follows one. The answer holds the job (with the status saying why and until when), stops its
run (a hand-back to serving, or a move between spot and on-demand), or lets it run on a given
capacity. Every decision is a ``kapell.policy`` function; this module only gathers what they
need (the clock, spot availability, the intensity source, the trough arbiter). A feed left
out turns its feature off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kapell.api import KapellError, TrainingJob
from kapell.api.kinds import TrainingJobStatus
from kapell.api.units import parse_duration
from kapell.control.protocol import RunPhase, TrainingRun
from kapell.control.trough import TroughArbiter
from kapell.policy.carbon.deferral import job_power_w, plan_deferral
from kapell.policy.carbon.series import HOUR_S, HourlySeries
from kapell.policy.energy import PowerModels, default_power_models
from kapell.policy.spot.decide import Capacity, JobState
from kapell.policy.spot.live import DECISION_INTERVAL_S, decide
from kapell.policy.trough import Lend

WAIT_POLL_S = 5.0
"""How often a job held for spot or idle GPUs looks again (squeezes and clocks aside)."""


@dataclass(frozen=True)
class Feeds:
    """What the scheduler observes. ``clock`` is epoch seconds (injected in tests)."""

    clock: Callable[[], float] = time.time
    spot_available: Callable[[float], bool] | None = None
    carbon: Callable[[float], HourlySeries] | None = None
    """The configured intensity source as an hourly series covering now onwards."""
    power_models: PowerModels = field(default_factory=default_power_models)
    trough: TroughArbiter | None = None


@dataclass(frozen=True)
class Gate:
    """The scheduler's answer: the status so far, whether to stop the run, whether to hold
    the job (and look again after ``requeue_s``), and the job as it should run."""

    status: TrainingJobStatus
    job: TrainingJob
    stop: bool = False
    hold: bool = False
    deferred: bool = False
    """Held for its planned start: the backend may prepare the run, held (``hold``)."""
    requeue_s: float | None = None
    note: str = ""
    """Said when the run starts (e.g. why a deferrable job could not be planned)."""


@dataclass
class _Seen:
    """What the scheduler remembers of a job between reconciles (lost on restart; the
    policies then start from what the status keeps)."""

    at_s: float
    run_since_s: float = 0.0
    spot_up: bool | None = None
    spot_since_s: float = 0.0
    spot_runs_s: list[float] = field(default_factory=list)
    move_after_checkpoints: int | None = None


def stamp(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def job_gpus(job: TrainingJob) -> int:
    """GPUs the job's workers take from a pool (a worker without a GPU count: one)."""
    return sum(
        g.replicas * (max(1, g.resources.gpu.count) if g.resources.gpu is not None else 1)
        for g in job.spec.worker_group_specs
    )


def on_capacity(job: TrainingJob, capacity: Capacity) -> TrainingJob:
    """The job with its spot-allowed groups on ``capacity`` (the workers' capacity label)."""
    spot = capacity == Capacity.SPOT
    groups = [
        g.model_copy(update={"spot": spot}) if g.spot else g for g in job.spec.worker_group_specs
    ]
    return job.model_copy(
        update={"spec": job.spec.model_copy(update={"worker_group_specs": groups})}
    )


class Scheduler:
    """``gate(job, status, run)``, called by the TrainingJob controller each reconcile."""

    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds
        self._seen: dict[str, _Seen] = {}

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)
        if self.feeds.trough is not None:
            self.feeds.trough.hold(key, 0)

    def gate(self, job: TrainingJob, status: TrainingJobStatus, run: TrainingRun | None) -> Gate:
        now = self.feeds.clock()
        seen = self._seen.setdefault(job.key, _Seen(now, now))
        active = run is not None and run.phase.active
        running = active and run is not None and run.phase is RunPhase.RUNNING
        elapsed = max(0.0, now - seen.at_s)
        update: dict[str, object] = {
            "trained_seconds": status.trained_seconds + (elapsed if running else 0.0),
            "lent_gpu_seconds": status.lent_gpu_seconds + (elapsed * status.lent_gpus),
        }
        if not status.submit_time:
            update["submit_time"] = stamp(now)
        seen.at_s = now
        status = status.model_copy(update=update)
        if status.phase in ("Succeeded", "Failed") and not active:
            if self.feeds.trough is not None:
                self.feeds.trough.hold(job.key, 0)
            return Gate(status, job)
        gate = Gate(status, job)
        for step in (self._defer, self._borrow, self._spot):
            gate = step(job, gate, run, active, seen, now)
            if gate.hold:
                break
        if gate.stop or not active:
            seen.run_since_s = now
        return gate

    # -- carbon ----------------------------------------------------------------------------
    def _defer(
        self, job: TrainingJob, gate: Gate, run: TrainingRun | None, active: bool,
        seen: _Seen, now: float,
    ) -> Gate:  # fmt: skip
        """Hold a deferrable job that never ran until the carbon plan's start."""
        spec, status = job.spec, gate.status
        never_ran = not active and not status.start_time and status.trained_seconds == 0
        if not (spec.deferrable and self.feeds.carbon and never_ran):
            return gate
        assert spec.deadline is not None and spec.expected_duration is not None
        deadline_at = epoch(status.submit_time) + parse_duration(spec.deadline)
        try:
            plan = plan_deferral(
                self.feeds.carbon(now),
                now,
                deadline_at,
                parse_duration(spec.expected_duration),
                job_power_w(spec, self.feeds.power_models),
            )
        except KapellError as exc:  # e.g. an intensity file that does not cover the window
            return Gate(status, gate.job, note=f"not deferred: {exc}")
        status = status.model_copy(
            update={
                "planned_start": stamp(plan.start_s),
                "planned_g_co2": round(plan.planned_g, 1),
                "at_once_g_co2": round(plan.at_once_g, 1),
            }
        )
        if not plan.holds(now):
            return Gate(status, gate.job)
        next_hour = (now // HOUR_S + 1) * HOUR_S  # re-plan on the source each hour
        message = (
            f"deferred until {stamp(plan.start_s)} (carbon plan): {plan.planned_g:.0f} gCO2 "
            f"expected, {plan.at_once_g:.0f} gCO2 if started now"
        )
        return Gate(
            status.model_copy(update={"phase": "Pending", "message": message}),
            gate.job,
            hold=True,
            deferred=True,
            requeue_s=min(plan.start_s, next_hour) - now,
        )

    # -- troughs ---------------------------------------------------------------------------
    def _borrow(
        self, job: TrainingJob, gate: Gate, run: TrainingRun | None, active: bool,
        seen: _Seen, now: float,
    ) -> Gate:  # fmt: skip
        """An opportunistic job runs only on GPUs the serving fleet leaves idle."""
        arbiter = self.feeds.trough
        if not (job.spec.opportunistic and arbiter is not None):
            return gate
        needed = job_gpus(job)
        # Lent until handed back, even if its run just ended (a failed run is started again
        # on the same GPUs): a squeeze then still reads as a hand-back.
        arbiter.hold(job.key, needed if active or arbiter.held_by(job.key) else 0)
        move = arbiter.lend(job.key, needed)
        if move in (Lend.START, Lend.KEEP):
            arbiter.hold(job.key, needed)
            return Gate(gate.status.model_copy(update={"lent_gpus": needed}), gate.job)
        arbiter.hold(job.key, 0)
        handed = f"handed {needed} GPU(s) back to serving"
        if move is Lend.HAND_BACK or gate.status.message.startswith(handed):
            # Said until the job runs again, so that a hand-back is not hidden by the wait.
            message = f"{handed}; resumes from its newest checkpoint in the next trough"
        else:
            message = f"waiting for {needed} idle serving GPU(s)"
        status = gate.status.model_copy(
            update={"phase": "Pending", "message": message, "lent_gpus": 0}
        )
        return Gate(status, gate.job, stop=active, hold=True, requeue_s=WAIT_POLL_S)

    # -- spot ------------------------------------------------------------------------------
    def _spot(
        self, job: TrainingJob, gate: Gate, run: TrainingRun | None, active: bool,
        seen: _Seen, now: float,
    ) -> Gate:  # fmt: skip
        """Run a deadline job's spot-allowed groups on the capacity the spot policy picks."""
        spec, status = job.spec, gate.status
        available = self.feeds.spot_available
        if not (spec.deadline and available and any(g.spot for g in spec.worker_group_specs)):
            return gate
        assert spec.expected_duration is not None
        up = available(now)
        if up != seen.spot_up:
            if seen.spot_up:  # a spot period ended: the policy learns its length
                seen.spot_runs_s.append(now - seen.spot_since_s)
            seen.spot_up, seen.spot_since_s = up, now
        holding = Capacity(status.capacity) if active and status.capacity else Capacity.WAIT
        overhead = parse_duration(spec.restart_overhead)
        started = run is not None and run.phase is RunPhase.RUNNING
        work = parse_duration(spec.expected_duration)
        state = JobState(
            elapsed_s=now - epoch(status.submit_time),
            work_s=work,
            work_left_s=max(0.0, work - status.trained_seconds),
            deadline_s=parse_duration(spec.deadline),
            restart_overhead_s=overhead,
            interval_s=DECISION_INTERVAL_S,
            running=holding,
            overhead_left_s=0.0 if started else max(0.0, overhead - (now - seen.run_since_s)),
            spot_available=up,
            spot_up_s=now - seen.spot_since_s if up else 0.0,
            spot_runs_s=tuple(seen.spot_runs_s),
        )
        decision = decide(state)
        target = decision.capacity
        status = status.model_copy(update={"capacity_reason": decision.reason})
        reclaimed = holding == Capacity.SPOT and not up
        stop = False
        if active and target != holding:
            # A move waits for the run's next checkpoint (nothing is redone), unless spot was
            # reclaimed (the workers are gone) or the run is not training yet.
            if seen.move_after_checkpoints is None:
                seen.move_after_checkpoints = run.checkpoints if run is not None else 0
            checkpointed = run is not None and run.checkpoints > seen.move_after_checkpoints
            stop = reclaimed or not started or checkpointed
            if not stop:
                message = f"moving to {target.value} after the next checkpoint"
                return Gate(status.model_copy(update={"message": message}), gate.job)
        if stop or not active:
            seen.move_after_checkpoints = None
        if target == Capacity.WAIT and (stop or not active):
            status = status.model_copy(
                update={"phase": "Pending", "capacity": "wait", "message": "waiting for spot"}
            )
            return Gate(status, gate.job, stop=stop, hold=True, requeue_s=WAIT_POLL_S)
        if stop or not active:
            status = status.model_copy(update={"capacity": target.value})
        return Gate(status, on_capacity(gate.job, target), stop=stop)
