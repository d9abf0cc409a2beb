"""One simulated replica: a lifecycle state and a continuous batcher driven by virtual time.

The replica never steps iteration by iteration when it can avoid it: a decode-only stretch
runs to the next completion in one event, and an arrival cuts the stretch at the iteration
boundary after it (the engine would admit the newcomer there too).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kapell.engines.sim.batcher import ContinuousBatcher, StepPlan, StepResult
from kapell.engines.sim.latency import LatencyProfile


class ReplicaState(Enum):
    STARTING = "starting"  # cold start: pulling weights, loading, warming up
    WAKING = "waking"  # warm tier: weights back from host memory
    READY = "ready"
    DRAINING = "draining"  # no new requests; stops when its last request finishes
    SLEEPING = "sleeping"  # warm tier: weights offloaded, wakes in seconds
    STOPPED = "stopped"

    @property
    def holds_gpu(self) -> bool:
        return self in _GPU_STATES


_GPU_STATES = frozenset(
    {ReplicaState.STARTING, ReplicaState.WAKING, ReplicaState.READY, ReplicaState.DRAINING}
)


@dataclass
class PendingStep:
    """The iteration (or decode-only run) in flight and when it ends."""

    start_s: float
    end_s: float
    plan: StepPlan | None  # None: a decode-only run of ``iterations``
    iterations: int
    version: int


class SimReplica:
    """A replica's lifecycle state and its batcher."""

    def __init__(
        self, replica_id: str, profile: LatencyProfile, *, prefix_block_tokens: int
    ) -> None:
        self.replica_id = replica_id
        self.state = ReplicaState.STOPPED
        self.batcher = ContinuousBatcher(profile, prefix_block_tokens=prefix_block_tokens)
        self.pending: PendingStep | None = None
        self.version = 0

    def next_step(self, now_s: float) -> PendingStep | None:
        """Plan what runs from ``now_s``; ``None`` when idle. The caller schedules its end."""
        plan = self.batcher.plan()
        if plan is None:
            self.pending = None
            return None
        self.version += 1
        if not plan.prefill and self.batcher.decode_only():
            iterations = self.batcher.iterations_to_next_finish()
            duration_s = self.batcher.decode_run_s(iterations)
            self.pending = PendingStep(now_s, now_s + duration_s, None, iterations, self.version)
        else:
            self.pending = PendingStep(now_s, now_s + plan.duration_s, plan, 1, self.version)
        return self.pending

    def cut_run(self, now_s: float) -> PendingStep | None:
        """Shorten a decode-only run to the iteration boundary at or after ``now_s``.

        Returns the rescheduled step, or ``None`` when nothing changed.
        """
        pending = self.pending
        if pending is None or pending.plan is not None or pending.iterations == 1:
            return None
        iterations = self.batcher.iterations_by(now_s - pending.start_s)
        if iterations >= pending.iterations:
            return None
        self.version += 1
        end_s = pending.start_s + self.batcher.decode_run_s(iterations)
        self.pending = PendingStep(pending.start_s, end_s, None, iterations, self.version)
        return self.pending

    def finish_step(self) -> StepResult:
        """Apply the pending step's effects (its end time has come)."""
        pending = self.pending
        assert pending is not None
        self.pending = None
        if pending.plan is None:
            return self.batcher.apply_decode_run(pending.iterations)
        return self.batcher.apply(pending.plan)
