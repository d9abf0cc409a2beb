"""The observed state of one run of a TrainingJob: what a training backend reports.

It lives in ``api`` (like ``api.replica``) because the controller and the backends that run
jobs may not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RunPhase(StrEnum):
    """Where a run is: held until its planned start, its cluster starting, the job queued or
    running, or finished."""

    HELD = "Held"  # made but held by kapell (a deferred start: a suspended RayJob); not active
    STARTING = "Starting"  # the Ray cluster is coming up; nothing submitted yet
    PENDING = "Pending"  # submitted; the driver has not started
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED)

    @property
    def active(self) -> bool:
        """Whether the run holds capacity or soon will (started, not finished, not held)."""
        return not self.finished and self is not RunPhase.HELD


@dataclass(frozen=True)
class TrainingRun:
    """One attempt of a job on its cluster, with the progress its driver's log reported."""

    job_key: str
    revision: str
    attempt: int
    phase: RunPhase
    message: str = ""
    submission_id: str = ""
    dashboard_url: str = ""
    step: int | None = None
    loss: float | None = None
    checkpoints: int = 0
    last_checkpoint_step: int | None = None
    worker_restarts: int = 0
    output_uri: str = ""


def progress_changes(run: TrainingRun, record: Mapping[str, Any]) -> dict[str, Any]:
    """What one ``kapell-progress`` record (``api.jobenv``) changes in ``run``: its step (a run
    reporting steps is running, unless already finished), loss, and one more checkpoint, at the
    step the record names."""
    changes: dict[str, Any] = {}
    if "step" in record:
        changes["step"] = int(record["step"])
        if run.phase in (RunPhase.STARTING, RunPhase.PENDING):
            changes["phase"] = RunPhase.RUNNING
    if "loss" in record:
        changes["loss"] = float(record["loss"])
    if "checkpoint" in record:
        changes["checkpoints"] = run.checkpoints + 1
        changes["last_checkpoint_step"] = int(record["checkpoint"])
    return changes
