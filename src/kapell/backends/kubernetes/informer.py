"""A list-then-watch cache of one kind of Kubernetes object, as client-go's informers keep.

A thread lists the objects, remembers the list's resourceVersion, and watches from there; a
dropped connection resumes from the last version seen, and a ``410 Gone`` (the version fell
out of the apiserver's window) relists and reports the difference, so no event is ever lost
and nothing is reported twice. Objects are kept in the compact form ``convert`` returns, which
keeps the operator's memory small with tens of thousands of pods; an optional ``index`` groups
them (pods by Model), so a reconcile reads its own objects without scanning every one.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ALL_NS, ApiError, Client, generic_resource
from lightkube.core.resource import NamespacedResource

log = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects
Convert = Callable[[dict[str, Any]], T]
OnChange = Callable[[Key, T | None], None]
"""Called with the key and the new object, or None when it was deleted."""

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
WATCH_TIMEOUT_S = 300
LIST_CHUNK = 100  # objects per list page: a page of 500 ResourceSlices decodes to ~17 MiB
ABSENT_RECHECK_S = 30.0  # how often to list again a resource whose CRD is not installed


class Informer(Generic[T]):
    """Keeps ``cache`` equal to the cluster's objects of one resource, in a daemon thread."""

    def __init__(
        self,
        client: Client,
        resource: Any,
        convert: Convert[T],
        on_change: OnChange[T],
        *,
        namespace: str | None = None,
        labels: dict[str, Any] | None = None,
        index: Callable[[T], str] | None = None,
    ) -> None:
        self._client = client
        self._resource = as_dicts(resource)
        self._convert = convert
        self._on_change = on_change
        self._namespace = namespace
        self._labels = labels
        self._lock = threading.Lock()
        self._cache: dict[Key, T] = {}
        self._index_of = index
        self._index: dict[str, dict[Key, T]] = {}
        self._stop = threading.Event()
        self.synced = threading.Event()
        self.relists = 0
        self._version: str | None = None  # the last resourceVersion seen: where a watch resumes
        self.name = getattr(resource, "__name__", str(resource))

    def get(self, key: Key) -> T | None:
        with self._lock:
            return self._cache.get(key)

    def items(self) -> list[T]:
        with self._lock:
            return list(self._cache.values())

    def entries(self) -> list[tuple[Key, T]]:
        """The objects with their keys (namespace, name)."""
        with self._lock:
            return list(self._cache.items())

    def indexed(self, value: str) -> list[T]:
        """The objects whose ``index`` is ``value`` (needs ``index``)."""
        with self._lock:
            return list(self._index.get(value, {}).values())

    def _put(self, key: Key, value: T | None) -> None:
        """Set or (None) drop one object, keeping the index in step; the lock is held."""
        old = self._cache.pop(key, None) if value is None else self._cache.get(key)
        if value is not None:
            self._cache[key] = value
        if self._index_of is None:
            return
        if old is not None:
            group = self._index.get(self._index_of(old))
            if group is not None:
                group.pop(key, None)
                if not group:
                    del self._index[self._index_of(old)]
        if value is not None:
            self._index.setdefault(self._index_of(value), {})[key] = value

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failures = 0
        absent = False  # the resource's API is not served: its CRD is not installed (yet)
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._version = self._relist()
                absent = False
                self._watch()
                failures = 0
            except httpx.HTTPStatusError as exc:  # ApiError, or a status before the stream began
                code = _status_code(exc)
                if code == 410:  # the version is too old: start over from a list
                    log.info("%s watch expired; relisting", self.name)
                    self._version = None
                    continue
                if code == 404 and self._version is None:
                    if not absent:
                        log.info("%s: not served (CRD not installed); looking again every %.0f s",
                                 self.name, ABSENT_RECHECK_S)  # fmt: skip
                    absent = True
                    self._stop.wait(ABSENT_RECHECK_S)
                    continue
                failures += 1
                log.warning("%s watch failed: %s", self.name, exc)
            except (httpx.HTTPError, OSError) as exc:  # apiserver restarting, connection reset
                failures += 1
                log.info("%s watch interrupted: %s", self.name, exc)
            if failures:
                self._stop.wait(min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S))

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"labels": self._labels} if self._labels else {}
        if issubclass(self._resource, NamespacedResource):
            # lightkube reads a missing namespace as the kubeconfig's default, not as all.
            kwargs["namespace"] = self._namespace if self._namespace is not None else ALL_NS
        return kwargs

    def _relist(self) -> str:
        listing = self._client.list(self._resource, chunk_size=LIST_CHUNK, **self._kwargs())
        fresh: dict[Key, T] = {}
        for obj in listing:
            raw = dict(obj)
            fresh[_key(raw)] = self._convert(raw)
        self.relists += 1
        with self._lock:
            gone = [k for k in self._cache if k not in fresh]
            self._cache = fresh
            if self._index_of is not None:
                self._index = {}
                for key, value in fresh.items():
                    self._index.setdefault(self._index_of(value), {})[key] = value
        for key in gone:
            self._on_change(key, None)
        for key, value in fresh.items():
            self._on_change(key, value)
        self.synced.set()
        return listing.resourceVersion

    def _watch(self) -> None:
        events = self._client.watch(
            self._resource,
            resource_version=self._version,
            server_timeout=WATCH_TIMEOUT_S,
            **self._kwargs(),
        )
        for kind, obj in events:
            if self._stop.is_set():
                break
            raw = dict(obj)
            self._version = raw["metadata"]["resourceVersion"]
            key = _key(raw)
            if kind == "DELETED":
                with self._lock:
                    self._put(key, None)
                self._on_change(key, None)
            else:
                value = self._convert(raw)
                with self._lock:
                    self._put(key, value)
                self._on_change(key, value)


@functools.cache  # one class per resource: writers call it for every write
def as_dicts(resource: Any) -> Any:
    """The resource read as plain dicts: a typed lightkube resource decodes every object into
    nested classes, which ``convert`` then reads as a dict again; the informer skips both
    (half the memory while a list page is decoded, and less time per watch event)."""
    if issubclass(resource, generic_resource.Generic):
        return resource
    base = (
        generic_resource.GenericNamespacedResource
        if issubclass(resource, NamespacedResource)
        else generic_resource.GenericGlobalResource
    )
    return type(resource.__name__, (base,), {"_api_info": resource._api_info})


def _status_code(exc: httpx.HTTPStatusError) -> int:
    if isinstance(exc, ApiError):
        return int(exc.status.code or 0)
    return exc.response.status_code


def _key(raw: dict[str, Any]) -> Key:
    meta = raw["metadata"]
    return meta.get("namespace") or "", meta["name"]


def wait_synced(informers: list[Informer[Any]], timeout_s: float) -> None:
    """Block until every informer has listed once (a controller must not act on half a view)."""
    deadline = time.monotonic() + timeout_s
    for informer in informers:
        if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"{informer.name}: no list from the apiserver in {timeout_s:.0f} s")
