"""The observed state of one replica: what backends report and `kapell status` shows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReplicaPhase(StrEnum):
    """Where a replica is in its life."""

    STARTING = "Starting"
    READY = "Ready"
    BACKOFF = "Backoff"  # crashed; waiting before the next restart
    STOPPING = "Stopping"


@dataclass(frozen=True)
class Replica:
    """One running copy of a Model, as a backend observes it."""

    id: str
    model_key: str
    revision: str
    phase: ReplicaPhase
    url: str = ""
    restarts: int = 0
    message: str = ""
    pid: int | None = None

    @property
    def ready(self) -> bool:
        return self.phase is ReplicaPhase.READY
