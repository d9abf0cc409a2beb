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
    failed_starts: int = 0
    """Starts in a row that ended before the replica was ready (0 once it is ready)."""

    @property
    def ready(self) -> bool:
        return self.phase is ReplicaPhase.READY


@dataclass(frozen=True)
class Endpoint:
    """One replica of one model, as the gateway sees it.

    ``base_url`` is the replica's OpenAI-compatible root without ``/v1``, e.g.
    ``http://127.0.0.1:8001``. ``replica_id`` is stable for the replica's life and unique within
    the model; routing state (outstanding tokens, the prefix hash ring) is keyed by it.
    """

    model: str
    replica_id: str
    base_url: str
    ready: bool = True
