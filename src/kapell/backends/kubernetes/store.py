"""kapell's kinds stored as custom resources: the controllers' ``Store`` over the Kubernetes API.

Desired state is the objects of one kind (``models.kapell.dev``, ``trainingjobs.kapell.dev``)
users apply with kubectl, one store per kind; an informer keeps a parsed copy, so ``get`` never
calls the apiserver. Status goes through the status subresource by server-side apply (field
manager ``kapell``) with the generation it describes as ``observedGeneration``, and only when
it changed, so a resync costs no write. Until the informer has seen a status set here, ``get``
returns the object with that status (read your writes). A finalizer holds a deleted Model
until its replicas are gone; the controller sees an object being deleted as absent.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType
from pydantic import ValidationError

from kapell.api import Model, Resource, TrainingJob
from kapell.api.crd import plural_of
from kapell.api.meta import API_GROUP, API_VERSION
from kapell.backends.kubernetes.informer import Informer, Key
from kapell.backends.kubernetes.writers import WriterPool

log = logging.getLogger(__name__)

FIELD_MANAGER = "kapell"
FINALIZER = "kapell.dev/replicas"
STATUS_WRITERS = 4
ModelResource = create_namespaced_resource(API_GROUP, "v1alpha1", "Model", "models")
TrainingJobResource = create_namespaced_resource(
    API_GROUP, "v1alpha1", "TrainingJob", plural_of("TrainingJob")
)
R = TypeVar("R", bound=Resource)


PARSED_CACHE = 64
"""Parsed objects kept for reuse (a reconcile reads its Model a few times; a scan of every
Model would miss any cache smaller than the fleet); the rest are parsed again on use."""


@dataclass(frozen=True, slots=True)
class Stored(Generic[R]):
    """What the operator keeps of one object of a kapell kind.

    The object itself is kept as its JSON and parsed again on use (a small cache holds the
    recent ones): a parsed Model is about 9 KiB of pydantic objects, its JSON under 1 KiB, and
    an operator carries thousands of Models.
    """

    uid: str
    generation: int
    deleting: bool
    finalizers: tuple[str, ...]
    kind: type[R]
    body: bytes  # the object as kapell's kind validates it; b"" when it does not parse
    error: str = ""
    status: str = ""  # the status as stored, JSON with sorted keys, to skip no-op writes
    observed_generation: int = 0

    @property
    def resource(self) -> R | None:
        """The parsed object (None when it does not parse; ``error`` says why)."""
        return cast("R", _parsed(self.kind, self.body)) if self.body else None


@functools.lru_cache(maxsize=PARSED_CACHE)
def _parsed(kind: type[Resource], body: bytes) -> Resource:
    return kind.model_validate_json(body)


StoredModel = Stored[Model]


def model_key(namespace: str, name: str) -> str:
    return f"Model/{namespace}/{name}"


def server_side_apply(client: Client, resource: Any, manifest: dict[str, Any]) -> Any:
    """Apply ``manifest`` as kapell (field manager ``kapell``, taking over conflicting fields)."""
    meta = manifest["metadata"]
    return client.patch(
        resource,
        meta["name"],
        manifest,
        namespace=meta.get("namespace"),
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=True,
    )


def resource_body(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    """A custom resource as the apiserver returns it, in the shape kapell's kinds validate:
    the server's metadata (uid, managedFields ...) left out."""
    meta = raw["metadata"]
    return {
        "apiVersion": raw.get("apiVersion", API_VERSION),
        "kind": kind,
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
        },
        "spec": raw.get("spec") or {},
        "status": raw.get("status") or {},
    }


def parse_stored(raw: dict[str, Any], kind: type[R]) -> Stored[R]:
    meta = raw["metadata"]
    status = raw.get("status") or {}
    comparable = {k: v for k, v in status.items() if k != "observedGeneration"}
    body = json.dumps(resource_body(raw, kind.model_fields["kind"].default)).encode()
    error = ""
    try:
        _parsed(kind, body)
    except ValidationError as exc:  # the CRD schema let through what kapell refuses
        body = b""
        error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return Stored(
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        finalizers=tuple(meta.get("finalizers") or ()),
        kind=kind,
        body=body,
        error=error,
        status=json.dumps(comparable, sort_keys=True),
        observed_generation=int(status.get("observedGeneration") or 0),
    )


def parse_model(raw: dict[str, Any]) -> StoredModel:
    return parse_stored(raw, Model)


def parse_training_job(raw: dict[str, Any]) -> Stored[TrainingJob]:
    return parse_stored(raw, TrainingJob)


class KubeStore(Generic[R]):
    """``Store`` for controllers: one kind's custom resources, status to their subresource.

    ``kind`` is the kapell class (``Model``, ``TrainingJob``), ``resource`` its lightkube
    resource (``ModelResource``, ``TrainingJobResource``), ``parse`` its ``parse_*``."""

    def __init__(
        self,
        client: Client,
        on_change: Callable[[str], None],
        namespace: str | None,
        kind: type[R],
        resource: Any,
        parse: Callable[[dict[str, Any]], Stored[R]],
    ) -> None:
        self._client = client
        self._kind = kind.model_fields["kind"].default
        self._resource = resource
        self._on_change = on_change
        # Per key: the (generation, status JSON) last written, and last set here.
        self._written: dict[str, tuple[int, str]] = {}
        self._own: dict[str, tuple[int, str]] = {}
        self._latest: dict[str, tuple[int, dict[str, object]]] = {}
        self._scheduled: set[str] = set()
        self._finalizing: set[str] = set()
        self._acted_on: dict[Key, tuple[str, int, bool, tuple[str, ...]] | None] = {}
        self._writer = WriterPool(STATUS_WRITERS, "kapell-status")
        self._lock = threading.Lock()
        self.writes = 0
        self.informer: Informer[Stored[R]] = Informer(
            client, resource, parse, self._changed, namespace=namespace
        )

    def close(self) -> None:
        """Drop queued status writes, as ``KubeReplicas.close`` does."""
        self._writer.close()

    def key(self, namespace: str, name: str) -> str:
        return f"{self._kind}/{namespace}/{name}"

    def _changed(self, key: Key, stored: Stored[R] | None) -> None:
        """Reconcile on what the controller acts on: not on status writes, its own above all."""
        acted_on = (
            None
            if stored is None
            else (stored.uid, stored.generation, stored.deleting, stored.finalizers)
        )
        with self._lock:
            if key in self._acted_on and self._acted_on[key] == acted_on:
                return
            if stored is None:
                self._acted_on.pop(key, None)
            else:
                self._acted_on[key] = acted_on
        self._on_change(self.key(*key))

    def stored(self, key: str) -> Stored[R] | None:
        _, namespace, name = key.split("/", 2)
        return self.informer.get((namespace, name))

    def object_keys(self) -> list[str]:
        return [self.key(*key) for key, s in self.informer.entries() if s.body]

    def live(self) -> list[tuple[str, Stored[R]]]:
        """Every object that parses and is not being deleted, by key, unparsed: a scan of
        thousands of objects (the console's sampler) must not parse each one (``Stored``)."""
        return [
            (self.key(*key), s) for key, s in self.informer.entries() if s.body and not s.deleting
        ]

    def resources(self) -> list[R]:
        """Every live object of the kind as ``get`` reads it (the console lists them)."""
        found = (self.get(key) for key in self.object_keys())
        return [r for r in found if r is not None]

    def get(self, key: str) -> R | None:
        stored = self.stored(key)
        if stored is None or stored.deleting or stored.resource is None:
            return None
        with self._lock:
            own = self._own.get(key)
        if own is None or own[0] != stored.generation or own[1] == stored.status:
            return stored.resource
        # The informer has not yet seen the status last set here: a controller whose status is
        # its memory (a TrainingJob's attempt) must read its own write, not act twice.
        body = json.loads(stored.body)
        body["status"] = json.loads(own[1])
        return stored.kind.model_validate(body)

    def set_status(self, key: str, status: dict[str, object]) -> None:
        """Queue the status for a writer thread; writes of one object coalesce (latest wins),
        so a reconcile never waits on the apiserver for what is only a report. Unset fields
        (``None``) are left out: the CRD's schema has no nullable fields."""
        stored = self.stored(key)
        if stored is None or stored.deleting:
            return
        status = {k: v for k, v in status.items() if v is not None and k != "observedGeneration"}
        payload = json.dumps(status, sort_keys=True)
        written = (stored.generation, payload)  # one string shared by both tables
        with self._lock:
            self._own[key] = written
            if self._written.get(key) == written:
                return
        if stored.status == payload and stored.observed_generation == stored.generation:
            with self._lock:
                self._written[key] = written
            return
        with self._lock:
            self._latest[key] = (stored.generation, status)
            if key in self._scheduled:
                return
            self._scheduled.add(key)
        self._writer.submit(self._flush_status, key)

    def _flush_status(self, key: str) -> None:
        with self._lock:
            self._scheduled.discard(key)
            generation, status = self._latest.pop(key)
        try:
            self._write_status(key, generation, status)
        except (ApiError, httpx.HTTPError, OSError) as exc:  # the next reconcile writes again
            log.warning("status of %s: %s", key, exc)

    def _write_status(self, key: str, generation: int, status: dict[str, object]) -> None:
        written = (generation, json.dumps(status, sort_keys=True))
        _, namespace, name = key.split("/", 2)
        body = {
            "apiVersion": API_VERSION,
            "kind": self._kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": {**status, "observedGeneration": generation},
        }
        try:
            self._client.patch(
                self._resource.Status,
                name,
                body,
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=True,
            )
        except ApiError as exc:
            if exc.status.code == 404:  # deleted meanwhile
                return
            raise
        with self._lock:
            self.writes += 1
            self._written[key] = written

    def ensure_finalizer(self, key: str) -> None:
        """Add the finalizer to a live object that lacks it (so deletion waits for cleanup)."""
        stored = self.stored(key)
        if stored is None or stored.deleting or FINALIZER in stored.finalizers:
            return
        marker = f"{key}|{stored.uid}"
        with self._lock:
            if marker in self._finalizing:  # queued already; the informer has not seen it yet
                return
            self._finalizing.add(marker)
        self._writer.submit(self._add_finalizer, key, stored, marker)

    def _add_finalizer(self, key: str, stored: Stored[R], marker: str) -> None:
        try:
            self._set_finalizers(key, stored, [*stored.finalizers, FINALIZER])
        except (ApiError, httpx.HTTPError, OSError) as exc:
            log.warning("finalizer of %s: %s", key, exc)
            with self._lock:
                self._finalizing.discard(marker)  # the next reconcile tries again

    def release(self, key: str) -> None:
        """Drop the finalizer of an object being deleted once nothing it made is left."""
        stored = self.stored(key)
        if stored is None or not stored.deleting or FINALIZER not in stored.finalizers:
            return
        self._set_finalizers(key, stored, [f for f in stored.finalizers if f != FINALIZER])

    def _set_finalizers(self, key: str, stored: Stored[R], finalizers: list[str]) -> None:
        _, namespace, name = key.split("/", 2)
        # A JSON patch with a test on the uid: never touch a re-created object of the same name.
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": stored.uid},
            {"op": "replace" if stored.finalizers else "add", "path": "/metadata/finalizers",
             "value": finalizers},
        ]  # fmt: skip
        try:
            self._client.patch(
                self._resource, name, patch, namespace=namespace, patch_type=PatchType.JSON
            )
        except ApiError as exc:
            if exc.status.code not in (404, 409, 422):  # gone, or changed under us: next event
                raise
        with self._lock:
            self.writes += 1
