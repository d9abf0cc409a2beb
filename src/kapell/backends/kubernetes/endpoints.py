"""What an in-cluster gateway routes to: the namespace's Models and their ready pods, watched.

Ready addresses come from the EndpointSlices kube-controller-manager keeps for each Model's
Service (the operator names the Service after the Model and labels it, and the slices inherit
the label), so the gateway follows readiness exactly as a Service's clients would. Watch events
arrive on informer threads and are handed to the gateway's event loop with ``call_soon``; the
target is the gateway's in-memory endpoint source (this package does not import the gateway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from lightkube import Client
from lightkube.resources.discovery_v1 import EndpointSlice

from kapell.api.model import Model
from kapell.api.replica import Endpoint
from kapell.backends.kubernetes.informer import Informer, Key
from kapell.backends.kubernetes.pods import ENGINE_PORT, MANAGED_BY
from kapell.backends.kubernetes.store import ModelResource, StoredModel, parse_model

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class EndpointTarget(Protocol):
    """The part of the gateway's endpoint source this feed writes (called on its loop)."""

    def set_models(self, models: Iterable[Model]) -> None: ...

    def set_endpoints(self, name: str, urls: Iterable[str | Endpoint]) -> None: ...

    def set_unavailable(self, name: str, reason: str | None) -> None: ...


@dataclass(frozen=True)
class SliceEndpoints:
    """The ready endpoints one EndpointSlice lists for its Service: (pod name, base URL)."""

    service: str
    ready: tuple[tuple[str, str], ...]


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def parse_slice(raw: dict[str, Any]) -> SliceEndpoints:
    """Ready endpoints only: a terminating or not-yet-ready pod gets no request."""
    service = (raw["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL, "")
    ports = raw.get("ports") or []
    port = next((p["port"] for p in ports if p.get("name") == "http"), ENGINE_PORT)
    ready = []
    for endpoint in raw.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        # The API says a missing ``ready`` means unknown, to be taken as ready.
        if not addresses or (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        pod = (endpoint.get("targetRef") or {}).get("name") or addresses[0]
        ready.append((pod, _url(addresses[0], port)))
    return SliceEndpoints(service, tuple(sorted(ready)))


class KubeEndpointFeed:
    """Keeps a gateway's endpoint source equal to one namespace's Models and ready pods."""

    def __init__(
        self,
        client: Client,
        namespace: str,
        target: EndpointTarget,
        call_soon: Callable[[Callable[[], None]], None],
    ) -> None:
        self._target = target
        self._call_soon = call_soon
        self._namespace = namespace
        self.models: Informer[StoredModel] = Informer(
            client, ModelResource, parse_model, self._model_changed, namespace=namespace
        )
        self.slices: Informer[SliceEndpoints] = Informer(
            client, EndpointSlice, parse_slice, self._slice_changed, namespace=namespace,
            labels=MANAGED_BY,
        )  # fmt: skip
        self.informers = (self.models, self.slices)

    def _model_changed(self, _key: Key, _stored: StoredModel | None) -> None:
        self._call_soon(self.publish)

    def _slice_changed(self, key: Key, endpoints: SliceEndpoints | None) -> None:
        service = endpoints.service if endpoints else None
        self._call_soon(self.publish if service is None else lambda: self._publish_one(service))

    def _models(self) -> dict[str, Model]:
        return {
            name: resource
            for (_, name), s in self.models.entries()
            if not s.deleting and (resource := s.resource) is not None
        }

    def publish(self) -> None:
        """Push every Model, its availability and its ready endpoints to the target."""
        models = self._models()
        self._target.set_models(models.values())
        for name, model in models.items():
            self._target.set_unavailable(name, model.start_failure)
            self._target.set_endpoints(name, self._ready(name))

    def _publish_one(self, service: str) -> None:
        stored = self.models.get((self._namespace, service))
        if stored is not None and not stored.deleting and stored.body:
            self._target.set_endpoints(service, self._ready(service))

    def _ready(self, name: str) -> list[Endpoint]:
        found = {pod: url for s in self.slices.items() if s.service == name for pod, url in s.ready}
        return [Endpoint(name, pod, url) for pod, url in sorted(found.items())]


class ServiceLeader:
    """The address of a Service's ready endpoint, watched: how a gateway finds the operator.

    The operator's candidates are Ready only while they hold the Lease, so the Service's one
    ready endpoint is the leader. Reaching it by its pod address needs neither cluster DNS nor a
    Service proxy (the dev cluster has neither), and follows a new leader within a watch event.
    """

    def __init__(self, client: Client, namespace: str, service: str) -> None:
        self.service = service
        self.slices: Informer[SliceEndpoints] = Informer(
            client, EndpointSlice, parse_slice, lambda *_: None, namespace=namespace,
            labels={SERVICE_NAME_LABEL: service},
        )  # fmt: skip

    def url(self) -> str | None:
        ready = sorted(url for s in self.slices.items() for _, url in s.ready)
        return ready[0] if ready else None
