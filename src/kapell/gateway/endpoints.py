"""Where the gateway learns which replicas serve a model: the ``EndpointSource`` seam.

The gateway never starts or stops replicas. It reads endpoints from a source and, when a
model has none ready, asks the source for capacity and waits. Sources:

- the local backend (controllers, replica processes and the gateway in one asyncio process):
  an in-memory implementation written by the backend;
- ``StaticEndpointSource`` below: a fixed URL list from configuration, also what the
  ``external`` engine uses, and what tests and benchmarks drive by hand;
- later, Kubernetes EndpointSlices.

Every method except ``wait_ready`` is called on the request hot path, so implementations
return stored values without I/O. All methods are called from the gateway's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from kapell.api import Model, ObjectMeta
from kapell.api.model import ModelSource, ModelSpec
from kapell.api.replica import Endpoint


@runtime_checkable
class EndpointSource(Protocol):
    """What the gateway needs from the platform. Model names are ``metadata.name``."""

    def model_names(self) -> Sequence[str]:
        """Names of every model clients may ask for (ready or scaled to zero)."""
        ...

    def model(self, name: str) -> Model | None:
        """The Model resource for ``name`` (routing strategy, scaling, SLO), or None if unknown."""
        ...

    def ready_endpoints(self, name: str) -> Sequence[Endpoint]:
        """The replicas of ``name`` that accept requests now; empty when scaled to zero.

        Must be cheap (called once per request): return a stored tuple, do no I/O.
        """
        ...

    def unavailable(self, name: str) -> str | None:
        """Why ``name`` cannot get a ready replica however long a request waits (the model's
        condition message, e.g. an engine that is not installed, or replicas that crash before
        they are ready), or None when it has one or may still get one.

        Requests for a model with no ready replica and a reason here are refused at once with
        a 503 carrying it, and requests already held are released with it.
        """
        ...

    async def wait_ready(self, name: str, timeout_s: float) -> bool:
        """Wait until ``name`` has at least one ready endpoint; True at once if it has one.

        Returns False after ``timeout_s`` without a ready endpoint, and as soon as ``name``
        becomes ``unavailable``. Implement with an ``asyncio.Event``/``Condition`` set when
        endpoints or availability change, never by sleep-polling: the activator's first-token
        latency after a cold start depends on it.
        """
        ...

    def request_capacity(self, name: str) -> None:
        """Signal demand for ``name`` while it has no ready replica (scale from zero).

        Called once per queued request; must be idempotent and return at once. The platform
        is expected to start a replica and later make it appear in ``ready_endpoints``.
        """
        ...


def external_model(name: str, url: str, *, served_name: str | None = None) -> Model:
    """A minimal ``external`` Model for a name served at ``url`` (defaults everywhere else)."""
    return Model(
        metadata=ObjectMeta(name=name),
        spec=ModelSpec(
            source=ModelSource(url=url, served_name=served_name),
            engine={"name": "external"},
        ),
    )


class StaticEndpointSource:
    """Endpoints held in memory and changed only by ``set_endpoints`` and ``set_unavailable``.

    Built from configuration (``{model: [url, ...]}``) for the ``external`` engine, and driven
    by hand in tests and benchmarks: a test can start with no endpoints, watch
    ``capacity_requests``, then call ``set_endpoints`` once its upstream is listening, which
    wakes every ``wait_ready`` at once.
    """

    def __init__(
        self,
        urls: Mapping[str, Iterable[str]] | None = None,
        *,
        models: Iterable[Model] = (),
        on_capacity_request: Callable[[str], None] | None = None,
    ) -> None:
        self._models: dict[str, Model] = {m.metadata.name: m for m in models}
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._unavailable: dict[str, str] = {}
        self._ready_events: dict[str, asyncio.Event] = {}
        """Per model: set while it has a ready endpoint or cannot start (waiters must look)."""
        self._on_capacity_request = on_capacity_request
        self.capacity_requests: dict[str, int] = {}
        """How many times ``request_capacity`` was called, per model."""
        for name, model_urls in (urls or {}).items():
            url_list = list(model_urls)
            if name not in self._models:
                self._models[name] = external_model(name, url_list[0] if url_list else "")
            self.set_endpoints(name, url_list)
        for name in self._models:
            self._endpoints.setdefault(name, ())

    def add_model(self, model: Model) -> None:
        """Make ``model`` known (with no endpoints until ``set_endpoints``)."""
        self._models[model.metadata.name] = model
        self._endpoints.setdefault(model.metadata.name, ())

    def set_models(self, models: Iterable[Model]) -> None:
        """Replace the known models; endpoints of models no longer known are dropped."""
        self._models = {m.metadata.name: m for m in models}
        for name in list(self._endpoints):
            if name not in self._models:
                del self._endpoints[name]
                self._unavailable.pop(name, None)
                if name in self._ready_events:
                    self._ready_events[name].clear()
        for name in self._models:
            self._endpoints.setdefault(name, ())

    def set_endpoints(self, name: str, urls: Iterable[str | Endpoint]) -> None:
        """Replace the ready endpoints of ``name``.

        Plain URLs get replica ids ``name-0``, ``name-1``...; a backend that knows its
        replicas passes ``Endpoint`` objects so ids (and routing state) survive changes.
        """
        endpoints = tuple(
            url
            if isinstance(url, Endpoint)
            else Endpoint(model=name, replica_id=f"{name}-{i}", base_url=url.rstrip("/"))
            for i, url in enumerate(urls)
        )
        if name not in self._models:
            self._models[name] = external_model(name, endpoints[0].base_url if endpoints else "")
        self._endpoints[name] = endpoints
        self._wake(name)

    def set_unavailable(self, name: str, reason: str | None) -> None:
        """Say that ``name`` cannot start, and why (None: it can again); see ``unavailable``."""
        if reason is None:
            self._unavailable.pop(name, None)
        else:
            self._unavailable[name] = reason
        self._wake(name)

    def _wake(self, name: str) -> None:
        event = self._ready_events.setdefault(name, asyncio.Event())
        if self._endpoints.get(name) or name in self._unavailable:
            event.set()
        else:
            event.clear()

    def model_names(self) -> Sequence[str]:
        return tuple(self._models)

    def model(self, name: str) -> Model | None:
        return self._models.get(name)

    def ready_endpoints(self, name: str) -> Sequence[Endpoint]:
        return self._endpoints.get(name, ())

    def unavailable(self, name: str) -> str | None:
        return self._unavailable.get(name)

    async def wait_ready(self, name: str, timeout_s: float) -> bool:
        if self._endpoints.get(name):
            return True
        if name in self._unavailable:
            return False
        event = self._ready_events.setdefault(name, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return bool(self._endpoints.get(name))

    def request_capacity(self, name: str) -> None:
        self.capacity_requests[name] = self.capacity_requests.get(name, 0) + 1
        if self._on_capacity_request is not None:
            self._on_capacity_request(name)
