"""The console's source for the operator: Models from its informers, replicas with the node,
GPU and slice placement put on each pod, and traffic from the gateways' demand reports.

On a cluster the operator carries Models and, with KubeRay, TrainingJobs (Prompts and Budgets
have no informer there yet), so those pages say so; the gateways report counters and queues, not
latencies, so the latency plot stays empty; replica events live in Kubernetes' Events, which
the operator does not watch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from kapell.api import Model, Resource, TrainingJob
from kapell.api.replica import ReplicaPhase
from kapell.backends.kubernetes.inventory import Placement
from kapell.backends.kubernetes.replicas import KubeReplicas
from kapell.backends.kubernetes.store import KubeStore
from kapell.console.series import Reading, Sample, SeriesRing
from kapell.console.source import CarbonView, Event, ReplicaRow
from kapell.control.demand import DemandBoard

SAMPLE_EVERY_S = 5.0
"""An operator may carry thousands of Models: a sample of each every 5 s keeps the plots' ten
minutes in 120 points a model (18.5 MiB at 1,000 Models, 88 MiB at one a second for ten
minutes, by tracemalloc) and the controllers' loop free."""
KEEP_SAMPLES = 120


def describe_placement(placement: Placement) -> str:
    """Where a pod was placed, in words: ``node-3 GPU 2 MIG 3g.40gb (slice 4)``,
    ``node-1 GPU 0 250/1000 time-slicing``, ``node-2 GPUs 0,1``, ``node-5 (no GPU)``."""
    gpus = placement.gpus
    if not gpus:
        return f"{placement.node} (no GPU)"
    where = f"{placement.node} GPU{'s' if len(gpus) > 1 else ''} {','.join(map(str, gpus))}"
    if placement.mig is not None:
        return f"{where} MIG {placement.mig.profile} (slice {placement.mig.start})"
    request = placement.request
    if request.gpu_milli and request.gpu_milli < 1000:
        return f"{where} {request.gpu_milli}/1000 {request.sharing}"
    return where


class ClusterConsole:
    """A ``ConsoleSource`` over the operator's caches; it never calls the apiserver."""

    mode: Literal["local", "kubernetes"] = "kubernetes"

    def __init__(
        self,
        store: KubeStore[Model],
        replicas: KubeReplicas,
        board: DemandBoard,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jobs: Callable[[], list[TrainingJob]] | None = None,
    ) -> None:
        self._store = store
        self._replicas = replicas
        self._board = board
        self._clock = clock
        self._monotonic = monotonic
        self.ring = SeriesRing(KEEP_SAMPLES)
        self._jobs = jobs

    def _models(self) -> list[Model]:
        return self._store.resources()

    def resources(self, kind: str) -> Sequence[Resource]:
        if kind == "Model":
            return self._models()
        if kind == "TrainingJob" and self._jobs is not None:
            return self._jobs()
        return []

    def carries(self, kind: str) -> bool:
        return kind == "Model" or (kind == "TrainingJob" and self._jobs is not None)

    def replicas(self, model: Model) -> Sequence[ReplicaRow]:
        views = sorted(self._replicas.views(model.key), key=lambda v: v.name)
        return [
            ReplicaRow.of(v.replica(), describe_placement(v.placement) if v.placement else None)
            for v in views
        ]

    def events(self, model: Model, limit: int) -> Sequence[Event]:
        return []

    def series(self, model: Model) -> Sequence[Sample]:
        return self.ring.samples(model.key)

    def spend(self) -> dict[str, Any] | None:
        return None

    def carbon(self) -> CarbonView:
        return CarbonView(None)

    def sample(self) -> None:
        """One sample of every Model from the demand board (keyed ``namespace/name``), read
        from the stored objects without parsing them: at 1,000 Models a parsed copy of each,
        every 5 s, was the operator's largest passing allocation."""
        now_s, monotonic_s = self._clock(), self._monotonic()
        live = self._store.live()
        for key, stored in live:
            ready = sum(v.phase is ReplicaPhase.READY for v in self._replicas.views(key))
            demand = self._board.sample(key.split("/", 1)[1], ready, monotonic_s)
            desired = int(json.loads(stored.status or "{}").get("desiredReplicas", 0))
            self.ring.record(
                key, now_s,
                Reading(demand.tokens_total, demand.queue_depth, demand.in_flight, ready, desired),
            )  # fmt: skip
        self.ring.retain(key for key, _ in live)

    async def run(self, every_s: float = SAMPLE_EVERY_S) -> None:
        while True:
            self.sample()
            await asyncio.sleep(every_s)
