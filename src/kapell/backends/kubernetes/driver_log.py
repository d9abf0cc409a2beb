"""A TrainingJob's progress on a cluster: the ``kapell-progress`` lines of its driver's log.

KubeRay's SidecarMode runs the submitter (``ray job submit``, which follows the driver's log
until the job ends) as a container of the RayJob's head pod, so that container's log, read
through the pods/log API, is the driver's log. It is read whole (the records fold into the run
from its first line: step, loss, checkpoints, as ``kapell up`` counts them), on a thread of its
own, at most every ``READ_EVERY_S`` per RayJob while the job runs and once more after it ends.
A head pod already gone (``shutdownAfterJobFinishes``) keeps what was last read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod

from kapell.api.jobenv import parse_progress
from kapell.backends.kubernetes.writers import WriterPool

log = logging.getLogger(__name__)

SUBMITTER = "ray-job-submitter"
"""KubeRay's name for the submitter container in SidecarMode."""
CLUSTER_LABEL = "ray.io/cluster"
NODE_TYPE_LABEL = "ray.io/node-type"
READ_EVERY_S = 10.0

Key = tuple[str, str]  # the RayJob's (namespace, name)


class DriverLogs:
    """``records(...)``: the progress records read so far for one RayJob, a read when due."""

    def __init__(
        self,
        client: Client,
        on_change: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        every_s: float = READ_EVERY_S,
    ) -> None:
        """``on_change(job_key)`` is called when a read found new records."""
        self._client = client
        self._on_change = on_change
        self._clock = clock
        self._every_s = every_s
        self._lock = threading.Lock()
        self._records: dict[Key, list[dict[str, Any]]] = {}
        self._read_at: dict[Key, float] = {}
        self._final: set[Key] = set()  # read after the job ended: nothing more to come
        self._reading: set[Key] = set()
        self._reader = WriterPool(1, "kapell-driver-logs")

    def close(self) -> None:
        self._reader.close()

    def records(
        self, job_key: str, rayjob: Key, cluster: str, finished: bool
    ) -> list[dict[str, Any]]:
        """What the RayJob's driver reported so far; ``cluster`` is KubeRay's Ray cluster of
        it (its ``status.rayClusterName``; empty: no head pod yet)."""
        now = self._clock()
        with self._lock:
            found = list(self._records.get(rayjob, []))
            due = (
                cluster
                and rayjob not in self._final
                and rayjob not in self._reading
                and now - self._read_at.get(rayjob, -self._every_s) >= self._every_s
            )
            if due:
                self._reading.add(rayjob)
                self._read_at[rayjob] = now
        if due:
            self._reader.submit(self._read, job_key, rayjob, cluster, finished)
        return found

    def forget(self, rayjob: Key) -> None:
        """The RayJob is gone: drop what was read of it."""
        with self._lock:
            self._records.pop(rayjob, None)
            self._read_at.pop(rayjob, None)
            self._final.discard(rayjob)

    def _read(self, job_key: str, rayjob: Key, cluster: str, finished: bool) -> None:
        try:
            lines = self._driver_lines(rayjob[0], cluster)
        except (ApiError, httpx.HTTPError, OSError) as exc:  # read again when next due
            log.debug("driver log of RayJob %s/%s not read: %s", *rayjob, exc)
            lines = None
        with self._lock:
            self._reading.discard(rayjob)
            if finished:
                self._final.add(rayjob)
            if lines is None:
                return
            records = [r for r in map(parse_progress, lines) if r is not None]
            if records == self._records.get(rayjob, []):
                return
            self._records[rayjob] = records
        self._on_change(job_key)

    def _driver_lines(self, namespace: str, cluster: str) -> list[str] | None:
        """The head pod's submitter log, or None before the pod (or after it) exists."""
        labels: dict[str, Any] = {CLUSTER_LABEL: cluster, NODE_TYPE_LABEL: "head"}
        heads = list(self._client.list(Pod, namespace=namespace, labels=labels))
        if not heads:
            return None
        name = heads[0].metadata.name if heads[0].metadata else None
        if not name:
            return None
        return list(self._client.log(name, namespace=namespace, container=SUBMITTER))
