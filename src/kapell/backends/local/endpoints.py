"""The gateway's view of the local backend: ready replicas per model, kept in memory.

The gateway calls ``ready_endpoints`` on every request, so it returns a stored tuple; the
supervisor calls ``refresh`` when a replica changes phase, which also wakes the activator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from kapell.api.model import Model
from kapell.api.replica import Endpoint
from kapell.backends.local.replicas import LocalReplicas
from kapell.backends.local.store import SQLiteStore


class LocalEndpoints:
    """Implements the gateway's ``EndpointSource`` over the store and the supervisor."""

    def __init__(
        self,
        store: SQLiteStore,
        replicas: LocalReplicas,
        on_demand: Callable[[str], None],
    ) -> None:
        self._store = store
        self._replicas = replicas
        self._on_demand = on_demand
        self._models: dict[str, Model] = {}
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read models and ready replicas; called whenever either may have changed."""
        self._models = {
            m.metadata.name: m for m in self._store.resources("Model") if isinstance(m, Model)
        }
        ready: dict[str, list[Endpoint]] = {}
        for replica in self._replicas.all():
            name = replica.model_key.rsplit("/", 1)[-1]
            if replica.ready and name in self._models:
                ready.setdefault(name, []).append(Endpoint(name, replica.id, replica.url))
        self._endpoints = {name: tuple(eps) for name, eps in ready.items()}
        for name, event in self._events.items():
            if self._endpoints.get(name):
                event.set()
            else:
                event.clear()

    def model_names(self) -> Sequence[str]:
        return tuple(self._models)

    def model(self, name: str) -> Model | None:
        return self._models.get(name)

    def ready_endpoints(self, name: str) -> Sequence[Endpoint]:
        return self._endpoints.get(name, ())

    async def wait_ready(self, name: str, timeout_s: float) -> bool:
        if self._endpoints.get(name):
            return True
        event = self._events.setdefault(name, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return bool(self._endpoints.get(name))

    def request_capacity(self, name: str) -> None:
        model = self._models.get(name)
        if model is not None:
            self._on_demand(model.key)
