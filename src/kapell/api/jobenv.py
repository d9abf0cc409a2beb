"""What kapell tells a training entrypoint, and what the entrypoint tells kapell back.

It lives in ``api`` because both sides need it: the backend that submits jobs and the
entrypoints in ``kapell.train`` that run inside them.

Down: environment variables (``KAPELL_*``) with the job's name, worker count and shape, where
checkpoints and the trained model go, and the checkpoint interval. Up: ``kapell-progress`` lines
in the driver's log (JSON after the marker), which the controller turns into the job's status.
Both directions are defined here only, so the runner and the entrypoint cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROGRESS_MARKER = "kapell-progress "


@dataclass(frozen=True)
class JobEnv:
    """A TrainingJob as its entrypoint sees it."""

    name: str
    workers: int
    cpus_per_worker: float
    checkpoint_uri: str
    checkpoint_interval: int
    output_uri: str
    max_restarts: int

    def environ(self) -> dict[str, str]:
        return {
            "KAPELL_JOB_NAME": self.name,
            "KAPELL_WORKERS": str(self.workers),
            "KAPELL_CPUS_PER_WORKER": str(self.cpus_per_worker),
            "KAPELL_CHECKPOINT_URI": self.checkpoint_uri,
            "KAPELL_CHECKPOINT_INTERVAL": str(self.checkpoint_interval),
            "KAPELL_OUTPUT_URI": self.output_uri,
            "KAPELL_MAX_RESTARTS": str(self.max_restarts),
        }

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> JobEnv:
        """Raises ``KeyError`` naming the variable when the entrypoint runs outside kapell."""
        return cls(
            name=env["KAPELL_JOB_NAME"],
            workers=int(env["KAPELL_WORKERS"]),
            cpus_per_worker=float(env["KAPELL_CPUS_PER_WORKER"]),
            checkpoint_uri=env["KAPELL_CHECKPOINT_URI"],
            checkpoint_interval=int(env["KAPELL_CHECKPOINT_INTERVAL"]),
            output_uri=env["KAPELL_OUTPUT_URI"],
            max_restarts=int(env["KAPELL_MAX_RESTARTS"]),
        )


def progress_line(**fields: Any) -> str:
    """One progress record, e.g. ``progress_line(step=10, loss=2.1)``; print it unchanged."""
    return PROGRESS_MARKER + json.dumps(fields, sort_keys=True)


def parse_progress(line: str) -> dict[str, Any] | None:
    """The record in a log line, wherever Ray's prefix (``(RayTrainWorker pid=..)``) put it,
    and whatever follows it: the driver's stdout and stderr share one log, and another
    thread's output can land between a record and its newline."""
    at = line.find(PROGRESS_MARKER)
    if at < 0:
        return None
    try:
        record, _ = json.JSONDecoder().raw_decode(line, at + len(PROGRESS_MARKER))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
