"""The observed state of one run of a TrainingJob: what a training backend reports.

It lives in ``api`` (like ``api.replica``) because the controller and the backends that run
jobs may not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
