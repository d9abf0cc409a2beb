"""The Model controller: keep the right number of replicas of the current revision running.

Level-based: every call reads the Model and the replicas that exist and moves one step toward
the desired set, whatever happened before. A changed spec is rolled out a quarter of the fleet
at a time (at least one replica; never fewer ready replicas than before), so re-applying a
Model fails no request.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from kapell.api import Condition, KapellError, TrainingJob
from kapell.api.errors import UnschedulableError
from kapell.api.model import WHOLE_GPU, Model
from kapell.control.protocol import (
    Replica,
    ReplicaBackend,
    ReplicaPhase,
    Scaler,
    Sizer,
    Store,
    condition,
)
from kapell.control.sizing import sized
from kapell.policy.sizing import SizeChoice

RESYNC_S = 2.0  # also the autoscaler's sampling period when nothing else happens
PROGRESS_S = 0.5


ROLLING_SURGE = 0.25
"""New replicas a rolling update starts at a time, as a share of the fleet (Kubernetes
Deployments' default ``maxSurge``): one at a time, a resize of ten replicas took ten cold
starts, and a fleet mid-roll cannot grow."""


def rolling_surge(desired: int) -> int:
    """How many new replicas may be starting at once in a rolling update: a quarter of the
    desired fleet, rounded up, at least one (a fleet of four or fewer rolls one at a time)."""
    return max(1, math.ceil(desired * ROLLING_SURGE))


REPLICA_FIELDS = {"source", "engine", "resources", "node_selector"}
"""The parts of a Model's spec a running replica embodies; scaling, routing and SLOs are not."""


def revision_of(model: Model) -> str:
    """A short, stable hash of what replicas run: replicas of another revision are out of date.

    Scaling, routing and SLO changes act on the fleet, so they roll no replica.
    """
    spec = model.spec.model_dump(
        mode="json", by_alias=True, include=REPLICA_FIELDS, exclude_defaults=True
    )
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


class ModelController:
    """``reconcile(key) -> requeue_after_s`` for Models."""

    def __init__(
        self,
        store: Store,
        backend: ReplicaBackend,
        scaler: Scaler,
        clock: Callable[[], float],
        timestamp: Callable[[], str],
        progress_s: float = PROGRESS_S,
        resync_s: float = RESYNC_S,
        over_budget: Callable[[Model], str | None] = lambda model: None,
        sizer: Sizer | None = None,
    ) -> None:
        """``progress_s`` and ``resync_s``: when to look again while replicas change and when
        they are settled. A backend that reports every change as an event may poll less.
        ``over_budget`` says why the Model's namespace may start nothing new (None: it may).
        ``sizer`` picks the size of ``resources.gpu: auto`` replicas (None: whole GPUs)."""
        self._store = store
        self._backend = backend
        self._scaler = scaler
        self._clock = clock
        self._timestamp = timestamp
        self._progress_s = progress_s
        self._resync_s = resync_s
        self._over_budget = over_budget
        self._sizer = sizer

    def reconcile(self, key: str) -> float | None:
        resource = self._store.get(key)
        replicas = self._backend.replicas(key)
        if not isinstance(resource, Model):
            for replica in replicas:
                self._backend.stop_replica(replica.id)
            self._scaler.forget(key)
            if self._sizer is not None:
                self._sizer.forget(key)
            return None
        source = trained_source(self._store, resource)
        if isinstance(source, Untrained):
            for replica in replicas:  # a job training anew makes what they serve out of date
                self._backend.stop_replica(replica.id)
            self._write_waiting(resource, source)
            return self._resync_s
        resource, size = self.with_size(source)
        revision = revision_of(resource)
        current = [r for r in replicas if r.revision == revision]
        old = [r for r in replicas if r.revision != revision]
        ready = sum(r.ready for r in replicas)
        desired = self._scaler.desired_replicas(resource, ready, self._clock())
        refusal = self._over_budget(resource)
        budget = _budget_condition(refusal, desired, len(replicas), self._timestamp())
        if refusal is not None:
            desired = min(desired, len(replicas))  # start nothing new, stop nothing running
        try:
            changed = self._step(resource, revision, desired, current, old)
        except KapellError as exc:  # a missing engine binary, no room: report, retry later
            self._write_status(
                resource, desired, self._backend.replicas(key), revision, budget, size, exc
            )
            return self._resync_s
        self._write_status(resource, desired, self._backend.replicas(key), revision, budget, size)
        busy = changed or old or any(not r.ready for r in current)
        return self._progress_s if busy else self._resync_s

    def with_size(self, model: Model) -> tuple[Model, SizeChoice | None]:
        """``model`` with an ``auto`` GPU request made the size the sizer picks now (a changed
        pick changes the revision: a rolling resize), and that pick; others as they are."""
        if not model.spec.sized_automatically:
            return model, None
        if self._sizer is None:
            choice = SizeChoice(WHOLE_GPU, "whole GPUs: this control plane has no sizing policy")
        else:
            try:
                choice = self._sizer.size_for(model, self._clock())
            except KapellError as exc:  # e.g. a source that names no latency profile
                choice = SizeChoice(WHOLE_GPU, f"whole GPUs: cannot size: {exc}")
        return sized(model, choice.size), choice

    def _step(
        self, model: Model, revision: str, desired: int, current: list[Replica], old: list[Replica]
    ) -> bool:
        """One move toward ``desired`` replicas of ``revision``; True if anything changed."""
        for replica in old:
            if not replica.ready or desired == 0:
                self._backend.stop_replica(replica.id)
                return True
        ready_current = [r for r in current if r.ready]
        if old:
            # Rolling update: surge new replicas (a quarter of the fleet at a time, at least
            # one), retire an old one for each that is ready. A fleet smaller than desired
            # grows at once: a rollout replaces replicas gradually, it does not hold back a
            # scale-up (a resize under a rising load would otherwise add a quarter per cold
            # start).
            if len(ready_current) + len(old) > desired and ready_current:
                self._backend.stop_replica(old[0].id)
                return True
            starting = len(current) - len(ready_current)
            short = len(current) + len(old) < desired
            if len(current) < desired and (short or starting < rolling_surge(desired)):
                self._backend.start_replica(model, revision)
                return True
            return False
        if len(current) < desired:
            for _ in range(desired - len(current)):
                self._backend.start_replica(model, revision)
            return True
        if len(current) > desired:
            # Retire replicas that serve nothing first, then the newest.
            surplus = sorted(current, key=lambda r: (r.ready, r.id))[: len(current) - desired]
            for replica in surplus:
                self._backend.stop_replica(replica.id)
            return True
        return False

    def _write_waiting(self, model: Model, untrained: Untrained) -> None:
        now = self._timestamp()
        message, failed = untrained.message, untrained.failed
        conditions = [
            condition("Ready", False, "WaitingForTrainingJob", message, now),
            condition("Progressing", not failed, "WaitingForTrainingJob", message, now),
            condition(
                "Degraded",
                failed,
                "TrainingJobFailed" if failed else "Healthy",
                message if failed else "no replica failing",
                now,
            ),
        ]
        kept = keep_transition_times(conditions, model.status.conditions)
        self._store.set_status(
            model.key, {"conditions": [c.model_dump(by_alias=True) for c in kept]}
        )

    def _write_status(
        self,
        model: Model,
        desired: int,
        replicas: list[Replica],
        revision: str,
        budget: Condition,
        size: SizeChoice | None,
        failure: KapellError | None = None,
    ) -> None:
        ready = [r for r in replicas if r.ready]
        updated = [r for r in replicas if r.revision == revision]
        failing = [r for r in replicas if r.phase is ReplicaPhase.BACKOFF]
        now = self._timestamp()
        rolling = len(updated) != len(replicas) or len(updated) != desired
        error = str(failure) if failure is not None else ""
        unschedulable = isinstance(failure, UnschedulableError)
        ready_message = f"{len(ready)}/{desired} replicas ready"
        if desired == 0 and not ready:
            ready_reason = "ScaledToZero"
        elif ready:
            ready_reason = "ReplicasReady"
        elif unschedulable:
            ready_reason, ready_message = "Unschedulable", f"{ready_message}: {error}"
        else:
            ready_reason = "NoReadyReplica"
        conditions = [
            condition("Ready", bool(ready) or desired == 0, ready_reason, ready_message, now),
            condition(
                "Progressing",
                rolling or len(ready) < desired,
                "RollingUpdate" if len(updated) != len(replicas) else "Scaling",
                f"{len(updated)} of {len(replicas)} replicas at revision {revision}",
                now,
            ),
            condition(
                "Degraded",
                bool(failing or error),
                ("Unschedulable" if unschedulable else "StartFailed")
                if error
                else ("CrashLoop" if failing else "Healthy"),
                error or "; ".join(f"{r.id}: {r.message}" for r in failing) or "no replica failing",
                now,
            ),
            budget,
        ]
        if size is not None:
            conditions.append(condition("Sized", True, "SizingPolicy", size.reason, now))
        kept = keep_transition_times(conditions, model.status.conditions)
        self._store.set_status(
            model.key,
            {
                "replicas": len(replicas),
                "readyReplicas": len(ready),
                "desiredReplicas": desired,
                "endpoints": [r.url for r in ready],
                "conditions": [c.model_dump(by_alias=True) for c in kept],
                "replicaSize": size.size if size is not None else None,
            },
        )


@dataclass(frozen=True)
class Untrained:
    """Why a Model's ``trainingjob://`` source has nothing to serve yet."""

    message: str
    failed: bool = False


def trained_source(store: Store, model: Model) -> Model | Untrained:
    """``model`` with a ``trainingjob://NAME`` source replaced by what the job wrote, once it
    succeeded; while it has not, why not. Other sources are returned as they are."""
    source = model.spec.source
    if source.scheme != "trainingjob":
        return model
    name = (source.uri or "").removeprefix("trainingjob://")
    job = store.get(f"TrainingJob/{model.metadata.namespace}/{name}")
    if not isinstance(job, TrainingJob):
        return Untrained(f"TrainingJob {name} does not exist")
    if job.status.phase != "Succeeded" or not job.status.output_uri:
        progress = "" if job.status.step is None else f" at step {job.status.step}"
        return Untrained(
            f"TrainingJob {name} is {job.status.phase}{progress}", job.status.phase == "Failed"
        )
    trained = source.model_copy(update={"uri": job.status.output_uri})
    return model.model_copy(update={"spec": model.spec.model_copy(update={"source": trained})})


def keep_transition_times(new: list[Condition], old: list[Condition]) -> list[Condition]:
    """``new`` conditions whose transition time changes only where their status does."""
    previous = {c.type: c for c in old}
    kept = []
    for condition_ in new:
        before = previous.get(condition_.type)
        if before is not None and before.status == condition_.status:
            update = {"last_transition_time": before.last_transition_time}
            condition_ = condition_.model_copy(update=update)
        kept.append(condition_)
    return kept


def _budget_condition(refusal: str | None, wanted: int, running: int, now: str) -> Condition:
    """``OverBudget``: True while the namespace's budget refuses new work, saying whether it
    held this Model below the replicas the autoscaler wanted."""
    if refusal is None:
        return condition("OverBudget", False, "WithinBudget", "the namespace has budget left", now)
    if wanted > running:
        message = f"scale-up from {running} to {wanted} replicas refused: {refusal}"
        return condition("OverBudget", True, "ScaleUpRefused", message, now)
    return condition("OverBudget", True, "BudgetReached", refusal, now)
