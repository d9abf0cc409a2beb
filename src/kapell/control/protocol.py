"""What controllers need from the world: a store of desired state and backends that run things.

Controllers import only these protocols; the local, Kubernetes and sim backends implement them
structurally, so the same reconcile code runs in every mode.
"""

from __future__ import annotations

from typing import Protocol

from kapell.api import Condition, Resource, TrainingJob
from kapell.api.model import Model
from kapell.api.replica import Replica, ReplicaPhase
from kapell.api.training import RunPhase, TrainingRun
from kapell.policy.sizing import SizeChoice

__all__ = [
    "Replica",
    "ReplicaBackend",
    "ReplicaPhase",
    "RunPhase",
    "Scaler",
    "Store",
    "TrainingBackend",
    "TrainingRun",
    "condition",
]


class Store(Protocol):
    """Desired state, keyed by ``Resource.key``."""

    def get(self, key: str) -> Resource | None: ...

    def set_status(self, key: str, status: dict[str, object]) -> None: ...


class ReplicaBackend(Protocol):
    """Runs and observes replicas of Models."""

    def replicas(self, model_key: str) -> list[Replica]: ...

    def start_replica(self, model: Model, revision: str) -> Replica: ...

    def stop_replica(self, replica_id: str) -> None: ...


class Scaler(Protocol):
    """Says how many replicas a Model should have now (the autoscaler's seam)."""

    def desired_replicas(self, model: Model, ready: int, now_s: float) -> int: ...

    def forget(self, model_key: str) -> None:
        """Drop what is kept for a Model that is gone."""
        ...


class Sizer(Protocol):
    """Picks the GPU size of a ``resources.gpu: auto`` Model's replicas (``control.sizing``)."""

    def size_for(self, model: Model, now_s: float) -> SizeChoice: ...

    def forget(self, model_key: str) -> None:
        """Drop what is kept for a Model that is gone."""
        ...


def condition(type_: str, ok: bool, reason: str, message: str, now: str) -> Condition:
    """A status condition; ``now`` is an RFC 3339 timestamp supplied by the caller."""
    return Condition(
        type=type_,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        last_transition_time=now,
    )


class TrainingBackend(Protocol):
    """Runs TrainingJobs, one run (attempt) per job at a time, and reports how each goes.

    ``hold`` prepares a run without starting it (a deferred start), where the backend has
    something to prepare (a suspended RayJob on Kubernetes; locally nothing): its run then
    reports ``RunPhase.HELD`` until ``start`` releases it.
    """

    def run(self, job_key: str) -> TrainingRun | None: ...

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None: ...

    def hold(self, job: TrainingJob, revision: str, attempt: int) -> None: ...

    def stop(self, job_key: str) -> None: ...
