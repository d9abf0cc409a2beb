"""The console's source for ``kapell up``: the SQLite store, the replica supervisor, the
gateway's meter and the accountant, read in this process.

Once a second ``sample`` reads each Model's cumulative tokens and current gauges from the
gateway's meter into the console's ``SeriesRing``; the gateway's access-log hook hands every
finished request's latency to ``add_latency``. GPU requests are not placed locally, so replicas
carry no placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from kapell.api import Model, Resource
from kapell.backends.local.replicas import LocalReplicas
from kapell.backends.local.store import SQLiteStore
from kapell.console.series import Reading, Sample, SeriesRing
from kapell.console.source import CarbonView, Event, ReplicaRow
from kapell.gateway.metering import ModelUsage
from kapell.observe.access_log import AccessRecord

SAMPLE_EVERY_S = 1.0
AHEAD_HOURS = 24
LOCAL_KINDS = ("Model", "TrainingJob", "Prompt", "Budget", "Tenant", "VectorStore", "GPUPool")


def describe_intensity(option: str | None) -> tuple[str | None, bool]:
    """How ``--carbon-intensity`` is shown, and whether it varies over time (a file)."""
    if option is None:
        return None, False
    with contextlib.suppress(ValueError):
        return f"a constant {float(option):g} gCO2/kWh (--carbon-intensity)", False
    return f"{Path(option).name} (--carbon-intensity)", True


class LocalConsole:
    """A ``ConsoleSource`` over one ``kapell up`` process."""

    mode: Literal["local", "kubernetes"] = "local"

    def __init__(
        self,
        store: SQLiteStore,
        replicas: LocalReplicas,
        usage: Callable[[str], ModelUsage],
        spend: Callable[[str | None], dict[str, Any]],
        intensity: Callable[[float], float],
        carbon_option: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._replicas = replicas
        self._usage = usage
        self._spend = spend
        self._intensity = intensity
        self._carbon_label, self._carbon_varies = describe_intensity(carbon_option)
        self._clock = clock
        self.ring = SeriesRing()

    def resources(self, kind: str) -> Sequence[Resource]:
        return self._store.resources(kind)

    def carries(self, kind: str) -> bool:
        return kind in LOCAL_KINDS

    def replicas(self, model: Model) -> Sequence[ReplicaRow]:
        return [ReplicaRow.of(r) for r in self._replicas.replicas(model.key)]

    def events(self, model: Model, limit: int) -> Sequence[Event]:
        return [
            Event(e["at"], e["replica"], e["event"], e["message"])
            for e in self._store.events(limit, model_key=model.key)
        ]

    def series(self, model: Model) -> Sequence[Sample]:
        return self.ring.samples(model.metadata.name)

    def spend(self) -> dict[str, Any] | None:
        return self._spend(None)

    def carbon(self) -> CarbonView:
        if self._carbon_label is None:
            return CarbonView(None)
        now_s = self._clock()
        ahead = (
            [(now_s + h * 3600, self._intensity(now_s + h * 3600)) for h in range(AHEAD_HOURS)]
            if self._carbon_varies
            else []
        )
        return CarbonView(self._carbon_label, self._intensity(now_s), ahead)

    def add_latency(self, record: AccessRecord) -> None:
        """The gateway's access-log hook: answered requests' latencies feed the plots."""
        if record.status < 400:
            self.ring.add_latency(record.model, record.latency_s)

    def sample(self) -> None:
        """One sample of every Model (the gateway meters models by name)."""
        now_s = self._clock()
        names = []
        for model in self._store.resources("Model"):
            assert isinstance(model, Model)
            name = model.metadata.name
            names.append(name)
            used = self._usage(name)
            ready = sum(r.ready for r in self._replicas.replicas(model.key))
            self.ring.record(
                name, now_s, Reading(
                    used.tokens, used.queue_depth, used.in_flight, ready,
                    model.status.desired_replicas,
                ),
            )  # fmt: skip
        self.ring.retain(names)

    async def run(self, every_s: float = SAMPLE_EVERY_S) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(every_s)
