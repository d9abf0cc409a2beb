"""The TrainingJob controller: one run of the job at a time, resubmitted while it may retry.

Level-based: every call reads the job, its status (the attempt it is on) and the run the
backend reports, and moves one step. No run yet, or none since ``kapell up`` restarted: start
one (the entrypoint resumes from the newest checkpoint). A failed run: start the next attempt
while ``backoffLimit`` allows, else the job has failed. A changed spec: stop the run of the old
spec and start over at attempt 0. The status carries the progress the run reported.

A namespace over its Budget starts no run (first, retried or resumed after a restart): the job
waits at ``Pending`` with an ``OverBudget`` condition and is looked at again every
``REFUSED_RETRY_S``; a run already going is not stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from kapell.api import TrainingJob
from kapell.api.kinds import TrainingJobStatus, TrainingPhase
from kapell.api.meta import Condition
from kapell.control.model import keep_transition_times
from kapell.control.protocol import RunPhase, Store, TrainingBackend, TrainingRun, condition
from kapell.control.training_schedule import Feeds, Scheduler

ACTIVE_S = 1.0
"""How often to look at a job whose run is active (progress shows this fresh in status)."""
REFUSED_RETRY_S = 5.0
"""How often a job refused by its namespace's budget looks again (a new day, a raised cap)."""


def revision_of(job: TrainingJob) -> str:
    """A short, stable hash of the spec: a run of another revision trains something else."""
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


class TrainingJobController:
    """``reconcile(key) -> requeue_after_s`` for TrainingJobs."""

    def __init__(
        self,
        store: Store,
        backend: TrainingBackend,
        timestamp: Callable[[], str],
        feeds: Feeds | None = None,
        over_budget: Callable[[TrainingJob], str | None] = lambda job: None,
    ) -> None:
        """``feeds``: what the scheduler observes (spot, carbon, troughs); none: jobs start at
        once on the capacity their spec names. ``over_budget`` says why the job's namespace may
        start nothing new (None: it may)."""
        self._store = store
        self._backend = backend
        self._timestamp = timestamp
        self._over_budget = over_budget
        self._scheduler = Scheduler(feeds or Feeds())

    def reconcile(self, key: str) -> float | None:
        job = self._store.get(key)
        run = self._backend.run(key)
        if not isinstance(job, TrainingJob):
            if run is not None:
                self._backend.stop(key)
            self._scheduler.forget(key)
            return None
        revision = revision_of(job)
        status = job.status
        if status.revision != revision:
            # New, or its spec changed: a fresh status, and no run of the old spec.
            if run is not None:
                self._backend.stop(key)
            status = TrainingJobStatus(revision=revision)
            self._scheduler.forget(key)
            run = None
        refusal = self._over_budget(job)
        gate = self._scheduler.gate(job, status, run)
        status = gate.status
        if gate.stop and run is not None:
            self._backend.stop(key)  # a hand-back to serving, or a move to other capacity
            run = None
        if gate.hold:
            if gate.deferred and run is None:
                self._backend.hold(gate.job, revision, status.attempt)  # e.g. a suspended RayJob
            self._write(job, status, refusal)
            return gate.requeue_s
        if run is not None and run.phase is RunPhase.HELD:
            run = None  # released now: started below like a run never made (start releases it)
        if status.phase in ("Succeeded", "Failed") and (run is None or run.phase.finished):
            self._write(
                job, status, refusal
            )  # finished: nothing runs again unless the spec changes
            return None
        retry = run is not None and run.phase is RunPhase.FAILED
        if refusal is not None and (
            run is None or (retry and status.attempt < job.spec.backoff_limit)
        ):
            status = (status if run is None else self._observed(status, run)).model_copy(
                update={"phase": "Pending", "message": f"not started: {refusal}"}
            )
            self._write(job, status, refusal, refused=True)
            return REFUSED_RETRY_S
        on = f" on {status.capacity}" if status.capacity else ""
        on += f"; {gate.note}" if gate.note else ""
        if run is None:
            self._backend.start(gate.job, revision, status.attempt)
            status = status.model_copy(
                update={"phase": "Pending", "message": f"starting attempt {status.attempt}{on}"}
            )
        elif run.phase is RunPhase.FAILED and status.attempt < job.spec.backoff_limit:
            attempt = status.attempt + 1
            self._backend.start(gate.job, revision, attempt)
            status = self._observed(status, run).model_copy(
                update={
                    "phase": "Pending",
                    "attempt": attempt,
                    "message": f"attempt {status.attempt} failed ({run.message}); "
                    f"starting attempt {attempt} from the newest checkpoint",
                }
            )
        else:
            status = self._observed(status, run)
        self._write(job, status, refusal)
        return None if status.phase in ("Succeeded", "Failed") else ACTIVE_S

    def _observed(self, status: TrainingJobStatus, run: TrainingRun) -> TrainingJobStatus:
        phases: dict[RunPhase, TrainingPhase] = {
            RunPhase.HELD: "Pending",
            RunPhase.STARTING: "Pending",
            RunPhase.PENDING: "Pending",
            RunPhase.RUNNING: "Running",
            RunPhase.SUCCEEDED: "Succeeded",
            RunPhase.FAILED: "Failed",
        }
        now = self._timestamp()
        update: dict[str, object] = {
            "phase": phases[run.phase],
            "message": run.message,
            "submission_id": run.submission_id or status.submission_id,
            "dashboard_url": run.dashboard_url,
            "worker_restarts": run.worker_restarts,
            "checkpoints": max(status.checkpoints, run.checkpoints),
        }
        # Progress of this run where it has reported some, else what earlier runs reached.
        for field in ("step", "loss", "last_checkpoint_step"):
            if getattr(run, field) is not None:
                update[field] = getattr(run, field)
        if run.phase is RunPhase.RUNNING and not status.start_time:
            update["start_time"] = now
        if run.phase.finished and not status.completion_time:
            update["completion_time"] = now
        if run.phase is RunPhase.SUCCEEDED:
            update["output_uri"] = run.output_uri
        return status.model_copy(update=update)

    def _write(
        self,
        job: TrainingJob,
        status: TrainingJobStatus,
        refusal: str | None,
        refused: bool = False,
    ) -> None:
        now = self._timestamp()
        progress = "" if status.step is None else f" at step {status.step}"
        conditions = [
            condition(
                "Ready",
                status.phase == "Succeeded",
                status.phase,
                status.message or f"{status.phase}{progress}",
                now,
            ),
            condition(
                "Progressing",
                status.phase in ("Pending", "Running"),
                status.phase,
                f"attempt {status.attempt}{progress}",
                now,
            ),
            condition(
                "Degraded",
                status.phase == "Failed" or status.attempt > 0,
                "Failed"
                if status.phase == "Failed"
                else "Retried"
                if status.attempt
                else "Healthy",
                status.message if status.attempt or status.phase == "Failed" else "no failure",
                now,
            ),
            _budget_condition(refusal, refused, now),
        ]
        kept = keep_transition_times(conditions, job.status.conditions)
        status = status.model_copy(update={"conditions": kept})
        self._store.set_status(job.key, status.model_dump(mode="json", by_alias=True))


def _budget_condition(refusal: str | None, refused: bool, now: str) -> Condition:
    """``OverBudget``: True while the namespace's budget refuses new work, saying whether it
    kept this job's run from starting (a run already going goes on)."""
    if refusal is None:
        return condition("OverBudget", False, "WithinBudget", "the namespace has budget left", now)
    if refused:
        return condition("OverBudget", True, "StartRefused", f"run not started: {refusal}", now)
    return condition("OverBudget", True, "BudgetReached", refusal, now)
