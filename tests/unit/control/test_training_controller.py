"""The TrainingJob controller's steps against an in-memory run table and a real SQLite store.

The table stands in for Ray clusters (those run in tests/integration/local/test_training.py);
here each decision is checked exactly: start, follow, retry within ``backoffLimit``, give up,
restart on a spec change, and a Model waiting for the job's output.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kapell.api import Model, TrainingJob
from kapell.api.loader import load_text
from kapell.api.training import RunPhase, TrainingRun
from kapell.backends.local.store import SQLiteStore
from kapell.control.model import Untrained, trained_source
from kapell.control.training import REFUSED_RETRY_S, TrainingJobController, revision_of

JOB = """\
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: t}
spec:
  entrypoint: python train.py STEPS
  workerGroupSpecs: [{groupName: cpu, replicas: 2, resources: {cpu: "1"}}]
  checkpoint: {intervalSteps: 10}
  backoffLimit: 1
---
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: served}
spec:
  source: {uri: trainingjob://t}
"""


def resources(steps: int = 100) -> tuple[TrainingJob, Model]:
    job, model = load_text(JOB.replace("STEPS", str(steps)))
    assert isinstance(job, TrainingJob) and isinstance(model, Model)
    return job, model


class RunTable:
    """In-memory runs: a started run is Starting until the test moves it on."""

    def __init__(self) -> None:
        self.runs: dict[str, TrainingRun] = {}
        self.starts: list[tuple[str, int]] = []
        self.holds: list[tuple[str, int]] = []
        self.stops: list[str] = []

    def run(self, job_key: str) -> TrainingRun | None:
        return self.runs.get(job_key)

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None:
        self.starts.append((revision, attempt))
        self.runs[job.key] = TrainingRun(job.key, revision, attempt, RunPhase.STARTING)

    def hold(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Held as a suspended RayJob is: a run that reports ``HELD``."""
        self.holds.append((revision, attempt))
        self.runs[job.key] = TrainingRun(job.key, revision, attempt, RunPhase.HELD)

    def stop(self, job_key: str) -> None:
        self.stops.append(job_key)
        self.runs.pop(job_key, None)

    def move(self, job_key: str, **changes: object) -> None:
        self.runs[job_key] = replace(self.runs[job_key], **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "state.db")


def stored_job(store: SQLiteStore, key: str) -> TrainingJob:
    job = store.get(key)
    assert isinstance(job, TrainingJob)
    return job


def test_a_job_runs_reports_progress_and_succeeds(store: SQLiteStore) -> None:
    job, _ = resources()
    store.apply(job)
    runs = RunTable()
    controller = TrainingJobController(store, runs, lambda: "2026-01-01T00:00:00Z")
    assert controller.reconcile(job.key) == 1.0
    assert runs.starts == [(revision_of(job), 0)]
    assert stored_job(store, job.key).status.phase == "Pending"

    runs.move(job.key, phase=RunPhase.RUNNING, step=42, loss=2.5, checkpoints=4,
              last_checkpoint_step=39)  # fmt: skip
    controller.reconcile(job.key)
    status = stored_job(store, job.key).status
    assert (status.phase, status.step, status.loss, status.checkpoints) == ("Running", 42, 2.5, 4)
    assert status.last_checkpoint_step == 39 and status.start_time

    runs.move(job.key, phase=RunPhase.SUCCEEDED, step=99, output_uri="/ckpt/t/model")
    assert controller.reconcile(job.key) is None
    status = stored_job(store, job.key).status
    assert (status.phase, status.output_uri) == ("Succeeded", "/ckpt/t/model")
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert controller.reconcile(job.key) is None  # finished: nothing starts again
    assert len(runs.starts) == 1


def test_a_failed_run_is_retried_within_the_backoff_limit_then_the_job_fails(
    store: SQLiteStore,
) -> None:
    job, _ = resources()
    store.apply(job)
    runs = RunTable()
    controller = TrainingJobController(store, runs, lambda: "2026-01-01T00:00:00Z")
    controller.reconcile(job.key)
    runs.move(job.key, phase=RunPhase.FAILED, step=30, message="worker died")
    controller.reconcile(job.key)
    assert runs.starts == [(revision_of(job), 0), (revision_of(job), 1)]
    status = stored_job(store, job.key).status
    assert (status.phase, status.attempt, status.step) == ("Pending", 1, 30)
    assert "worker died" in status.message

    runs.move(job.key, phase=RunPhase.FAILED, message="again")
    assert controller.reconcile(job.key) is None  # backoffLimit 1: no third attempt
    assert len(runs.starts) == 2
    status = stored_job(store, job.key).status
    assert (status.phase, status.attempt) == ("Failed", 1)
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "Failed")


def test_a_lost_run_is_started_again_at_the_same_attempt(store: SQLiteStore) -> None:
    """After ``kapell up`` restarts, the backend knows no run: the job resumes, not retries."""
    job, _ = resources()
    store.apply(job)
    runs = RunTable()
    TrainingJobController(store, runs, lambda: "t").reconcile(job.key)
    fresh = RunTable()
    TrainingJobController(store, fresh, lambda: "t").reconcile(job.key)
    assert fresh.starts == [(revision_of(job), 0)]


def test_a_changed_spec_stops_the_old_run_and_starts_over(store: SQLiteStore) -> None:
    job, _ = resources(100)
    store.apply(job)
    runs = RunTable()
    controller = TrainingJobController(store, runs, lambda: "t")
    controller.reconcile(job.key)
    changed, _ = resources(200)
    store.apply(changed)
    controller.reconcile(job.key)
    assert runs.stops == [job.key]
    assert runs.starts == [(revision_of(job), 0), (revision_of(changed), 0)]
    assert revision_of(job) != revision_of(changed)


def test_a_deleted_job_stops_its_run(store: SQLiteStore) -> None:
    job, _ = resources()
    store.apply(job)
    runs = RunTable()
    controller = TrainingJobController(store, runs, lambda: "t")
    controller.reconcile(job.key)
    store.delete(job.key)
    assert controller.reconcile(job.key) is None
    assert runs.stops == [job.key]


def test_a_model_serves_the_jobs_output_only_once_it_succeeded(store: SQLiteStore) -> None:
    job, model = resources()
    assert trained_source(store, model) == Untrained("TrainingJob t does not exist")
    store.apply(job)
    runs = RunTable()
    controller = TrainingJobController(store, runs, lambda: "t")
    controller.reconcile(job.key)
    runs.move(job.key, phase=RunPhase.RUNNING, step=7)
    controller.reconcile(job.key)
    assert trained_source(store, model) == Untrained("TrainingJob t is Running at step 7")
    runs.move(job.key, phase=RunPhase.SUCCEEDED, output_uri="/ckpt/t/model")
    controller.reconcile(job.key)
    resolved = trained_source(store, model)
    assert isinstance(resolved, Model)
    assert resolved.spec.source.uri == "/ckpt/t/model"


def overbudget(store: SQLiteStore, key: str) -> tuple[str, str, str]:
    found = next(c for c in stored_job(store, key).status.conditions if c.type == "OverBudget")
    return found.status, found.reason, found.message


def test_a_namespace_over_budget_starts_no_run_until_it_has_budget_again(
    store: SQLiteStore,
) -> None:
    job, _ = resources()
    store.apply(job)
    runs = RunTable()
    refusal: list[str | None] = ["namespace 'default' is over its daily budget"]
    controller = TrainingJobController(
        store, runs, lambda: "2026-01-01T00:00:00Z", over_budget=lambda job: refusal[0]
    )
    assert controller.reconcile(job.key) == REFUSED_RETRY_S
    assert runs.starts == []
    status = stored_job(store, job.key).status
    assert status.phase == "Pending" and "over its daily budget" in status.message
    assert overbudget(store, job.key)[:2] == ("True", "StartRefused")

    refusal[0] = None  # a new day, or a raised cap
    assert controller.reconcile(job.key) == 1.0
    assert runs.starts == [(revision_of(job), 0)]
    assert overbudget(store, job.key)[:2] == ("False", "WithinBudget")


def test_over_budget_a_running_job_goes_on_but_a_failed_one_is_not_retried(
    store: SQLiteStore,
) -> None:
    job, _ = resources()
    store.apply(job)
    runs = RunTable()
    refusal: list[str | None] = [None]
    controller = TrainingJobController(
        store, runs, lambda: "2026-01-01T00:00:00Z", over_budget=lambda job: refusal[0]
    )
    controller.reconcile(job.key)
    runs.move(job.key, phase=RunPhase.RUNNING, step=20)
    refusal[0] = "namespace 'default' is over its daily budget"
    assert controller.reconcile(job.key) == 1.0
    assert runs.stops == [] and stored_job(store, job.key).status.phase == "Running"
    assert overbudget(store, job.key)[:2] == ("True", "BudgetReached")

    runs.move(job.key, phase=RunPhase.FAILED, step=30, message="worker died")
    assert controller.reconcile(job.key) == REFUSED_RETRY_S
    assert len(runs.starts) == 1, "a retry started over budget"
    status = stored_job(store, job.key).status
    assert (status.phase, status.attempt, status.step) == ("Pending", 0, 30)
    assert overbudget(store, job.key)[:2] == ("True", "StartRefused")
