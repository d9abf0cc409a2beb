"""Replicas as Pods with pinned ResourceClaims: the controllers' ``ReplicaBackend`` on a cluster.

kapell's placement policy picks the node and the exact device; the Pod is pinned to that node
and its ResourceClaim to that device (by the device's ``uuid`` attribute), so kube-scheduler
and its DRA plugin allocate exactly what kapell decided. A whole GPU or a MIG instance gets a
claim of its own, owned by the pod. Shares of one GPU (time-slicing, MPS) use one claim per
GPU and namespace, owned by every pod on it, with each pod's share recorded on the claim.

Reads come from informers (pods, claims, nodes, ResourceSlices); writes are server-side applies
with field manager ``kapell``. A replica created and not yet seen by the informer is remembered,
so two starts in one reconcile never take the same slot or the same device.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
import numpy as np
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Node, Pod, Service
from lightkube.resources.resource_v1 import ResourceClaim, ResourceSlice

from kapell.api.errors import BackendError, UnschedulableError
from kapell.api.model import WHOLE_GPU, Model
from kapell.api.replica import Replica, ReplicaPhase
from kapell.api.units import parse_quantity
from kapell.backends.kubernetes import dra, inferencepool, pods
from kapell.backends.kubernetes.informer import Informer, Key, as_dicts
from kapell.backends.kubernetes.inventory import (
    DRIVER,
    PLACEMENT_ANNOTATION,
    ClusterView,
    Device,
    NodeView,
    Placement,
    devices_of,
    one_copy,
    request_for,
)
from kapell.backends.kubernetes.store import StoredModel, server_side_apply
from kapell.backends.kubernetes.writers import WriterPool
from kapell.policy.placement.inventory import Decision
from kapell.policy.placement.policies import Policy, make_policy
from kapell.policy.placement.requests import PodRequest

log = logging.getLogger(__name__)

SHARES_ANNOTATION = "kapell.dev/shares"
WRITERS = 8  # concurrent API writes: a reconcile decides, the writers carry it out
REPAIR_AFTER_S = 10.0
FAILURE_BACKOFF_S = 1.0  # a model whose last create failed waits this, doubling, before the next
FAILURE_BACKOFF_MAX_S = 60.0
DEFAULT_COLD_START_S = 30.0
INTEROP_RECHECK_S = 60.0  # how often to look again for the Inference Extension's CRDs
CLAIM_LOCK_STRIPES = 64  # shared claims hash onto these, so the locks do not grow with claims

InferencePool = create_namespaced_resource(*astuple(inferencepool.POOL))
InferenceObjective = create_namespaced_resource(*astuple(inferencepool.OBJECTIVE))


@dataclass(frozen=True, slots=True)
class PodView:
    """What the operator keeps of one of its pods."""

    namespace: str
    name: str
    uid: str
    model: str
    revision: str
    phase: ReplicaPhase
    ip: str = ""
    restarts: int = 0
    message: str = ""
    placement: Placement | None = None
    created: float = 0.0
    ready_at: float | None = None

    @property
    def model_key(self) -> str:
        return f"Model/{self.namespace}/{self.model}"

    def replica(self) -> Replica:
        url = f"http://{self.ip}:{pods.ENGINE_PORT}" if self.ip else ""
        return Replica(
            id=f"{self.namespace}/{self.name}",
            model_key=self.model_key,
            revision=self.revision,
            phase=self.phase,
            url=url,
            restarts=self.restarts,
            message=self.message,
        )


@dataclass(frozen=True, slots=True)
class _NewReplica:
    """A replica decided and not yet written: what the writer renders its Pod and claim from.
    The Model is kept as its JSON (under 1 KiB; parsed, about 9 KiB): at 1,000 Models the
    writers' backlog holds one per decided replica."""

    model_json: str
    owner: str  # the Model's uid
    revision: str
    name: str
    placement: Placement
    claim_name: str | None


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pod_view(raw: dict[str, Any]) -> PodView:
    """A pod's phase in kapell's terms: Starting, Ready, Backoff (crash-looping) or Stopping."""
    meta, status = raw["metadata"], raw.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    waiting = [c["state"]["waiting"] for c in containers if (c.get("state") or {}).get("waiting")]
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    message = ""
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        phase = ReplicaPhase.STOPPING
        message = status.get("message") or ""
    elif ready:
        phase = ReplicaPhase.READY
    elif waiting and waiting[0].get("reason") in ("CrashLoopBackOff", "ErrImageNeverPull"):
        phase = ReplicaPhase.BACKOFF
        message = f"{waiting[0].get('reason')}: {waiting[0].get('message', '')}".strip(": ")
    else:
        phase = ReplicaPhase.STARTING
        scheduled = conditions.get("PodScheduled") or {}
        if scheduled.get("status") == "False":
            message = f"{scheduled.get('reason', '')}: {scheduled.get('message', '')}"
    placement = None
    if PLACEMENT_ANNOTATION in annotations:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            placement = Placement.from_json(annotations[PLACEMENT_ANNOTATION])
    ready_at = (
        _timestamp((conditions.get("Ready") or {}).get("lastTransitionTime")) if ready else None
    )
    return PodView(  # strings many pods share are interned: 10,000 pods keep one copy
        namespace=sys.intern(meta.get("namespace", "")),
        name=meta["name"],
        uid=meta.get("uid", ""),
        model=sys.intern(labels.get(pods.MODEL_LABEL, "")),
        revision=sys.intern(labels.get(pods.REVISION_LABEL, "")),
        phase=phase,
        ip=status.get("podIP") or "",
        restarts=restarts,
        message=sys.intern(message),
        placement=placement,
        created=_timestamp(meta.get("creationTimestamp")) or 0.0,
        ready_at=ready_at,
    )


@dataclass(frozen=True, slots=True)
class ClaimView:
    """What the operator keeps of a claim. Of its own claims only the owners (what a repair
    checks: their devices are counted through their pods); of others', the devices allocated,
    which placement must leave alone."""

    namespace: str
    name: str
    managed: bool
    allocated: tuple[tuple[str, str], ...] = ()  # (node, device) of driver gpu.nvidia.com
    owners: tuple[str, ...] = ()  # names of the pods that own it (a tuple: 10,000 claims)


def claim_view(raw: dict[str, Any]) -> ClaimView:
    meta = raw["metadata"]
    managed = (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "kapell"
    allocation = (raw.get("status") or {}).get("allocation") or {}
    results = [] if managed else (allocation.get("devices") or {}).get("results") or []
    return ClaimView(
        namespace=sys.intern(meta.get("namespace", "")),
        name=meta["name"],
        managed=managed,
        allocated=tuple(
            (sys.intern(r["pool"]), sys.intern(r["device"]))
            for r in results
            if r.get("driver") == DRIVER
        ),
        # A whole GPU's claim is named after its one owner: one string for both.
        owners=tuple(
            meta["name"] if o["name"] == meta["name"] else o["name"]
            for o in meta.get("ownerReferences") or []
        ),
    )


@functools.lru_cache(maxsize=4096)
def _label(key: str, value: str) -> tuple[str, str]:
    """Nodes of a pool share most of their labels: one pair (and one copy of each string) for
    all of them; only the per-node ones (hostname) are the nodes' own."""
    return sys.intern(key), sys.intern(value)


def node_view(raw: dict[str, Any]) -> NodeView:
    status, spec = raw.get("status") or {}, raw.get("spec") or {}
    allocatable = status.get("allocatable") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return NodeView(
        labels=tuple(
            _label(k, v) for k, v in sorted((raw["metadata"].get("labels") or {}).items())
        ),
        name=raw["metadata"]["name"],
        cpu_milli=int(parse_quantity(str(allocatable.get("cpu", "0"))) * 1000),
        memory_mib=int(parse_quantity(str(allocatable.get("memory", "0"))) // (1024 * 1024)),
        schedulable=ready and not spec.get("unschedulable", False),
    )


def slice_view(raw: dict[str, Any]) -> tuple[str, list[Device]]:
    spec = raw.get("spec") or {}
    if spec.get("driver") != DRIVER:
        return "", []
    return spec.get("nodeName") or "", devices_of(spec)


class KubeReplicas:
    """``ReplicaBackend`` over Pods and ResourceClaims, placing with kapell's policy."""

    def __init__(
        self,
        client: Client,
        stored: Callable[[str], StoredModel | None],
        on_change: Callable[[str], None],
        namespace: str | None = None,
        policy: str = "kapell",
    ) -> None:
        self._client = client
        self._stored = stored
        self._on_change = on_change
        self._policy_name = policy
        self._lock = threading.RLock()
        self._pending: dict[Key, PodView] = {}  # decided, not yet seen by the informer
        self._pending_of: dict[str, set[Key]] = {}  # the same, by model key
        self._lost: set[str] = set()  # nodes that exist and take no pods
        self._counted: dict[Key, Placement] = {}
        self._view: ClusterView | None = None
        self._services: set[tuple[str, str, str]] = set()
        self._pools: dict[Key, tuple[str, int]] = {}  # Model -> (uid, priority) applied
        self._interop_checked: tuple[float, bool] | None = None  # (when, CRDs installed)
        self._sharers: dict[Key, dict[str, tuple[str, int]]] = {}
        self._claim_locks = tuple(threading.Lock() for _ in range(CLAIM_LOCK_STRIPES))
        self._repairing: set[Key] = set()
        self._failures: dict[str, tuple[int, float, str]] = {}  # model -> (count, when, why)
        self._nodes_seen: dict[Key, NodeView] = {}
        self._writers = WriterPool(WRITERS, "kapell-writer")
        self._last_json: tuple[Model, str] | None = None  # see _json_of
        self._policies: dict[frozenset[tuple[int, int, str | None]], Policy] = {}
        self.writes = 0
        self.pods: Informer[PodView] = Informer(
            client,
            Pod,
            pod_view,
            self._pod_changed,
            namespace=namespace,
            labels=pods.MANAGED_BY,
            index=lambda view: view.model_key,
        )
        self.claims: Informer[ClaimView] = Informer(
            client, ResourceClaim, claim_view, self._claim_changed
        )
        self.nodes: Informer[NodeView] = Informer(client, Node, node_view, self._node_changed)
        self.slices: Informer[tuple[str, list[Device]]] = Informer(
            client, ResourceSlice, slice_view, self._dirty
        )

    def close(self) -> None:
        """Drop queued writes (``WriterPool.close``), so a stopping operator exits at once."""
        self._writers.close()

    @property
    def informers(self) -> list[Informer[Any]]:
        return [self.nodes, self.slices, self.claims, self.pods]

    # --- events -------------------------------------------------------------------------

    def _dirty(self, key: Key, value: object) -> None:
        if isinstance(value, ClaimView) and value.managed:
            return  # kapell's own claims are counted through their pods
        with self._lock:
            self._view = None

    def _claim_changed(self, key: Key, claim: ClaimView | None) -> None:
        if claim is None:
            self._forget_sharers(key)
        self._dirty(key, claim)

    def _forget_sharers(self, key: Key) -> None:
        """Drop a deleted claim's remembered sharers, unless one of them is still to be seen
        (a pod just written that will write the claim anew)."""
        namespace = key[0]
        with self._lock:
            known = self._sharers.get(key, {})
            if not any(
                (namespace, pod) in self._pending or self.pods.get((namespace, pod)) is not None
                for pod in known
            ):
                self._sharers.pop(key, None)

    def _node_changed(self, key: Key, node: NodeView | None) -> None:
        with self._lock:  # most node events are heartbeats that change nothing placement sees
            if key in self._nodes_seen and self._nodes_seen[key] == node:
                return
            if node is None:
                self._nodes_seen.pop(key, None)
            else:
                self._nodes_seen[key] = node
            if node is not None and not node.schedulable:
                self._lost.add(key[1])
            else:
                self._lost.discard(key[1])
        self._dirty(key, node)
        if node is None or not node.schedulable:  # replicas there must be replaced
            for view in self.pods.items():
                if view.placement is not None and view.placement.node == key[1]:
                    self._on_change(view.model_key)

    def _pod_changed(self, key: Key, view: PodView | None) -> None:
        with self._lock:
            self._unpend(key)
            if self._view is not None:
                counted = self._counted.pop(key, None)
                if counted is not None:
                    self._view.release(counted)
                if (
                    view is not None
                    and view.placement is not None
                    and self._view.take(view.placement)
                ):
                    self._counted[key] = view.placement
        if view is not None:
            self._on_change(view.model_key)
        elif key[1]:
            name = key[1].rsplit("-", 2)[0]
            self._on_change(f"Model/{key[0]}/{name}")

    # --- the ReplicaBackend protocol ------------------------------------------------------

    def views(self, model_key: str) -> list[PodView]:
        """What is kept of the model's pods (and those being created), read-only: the console
        shows their placement without the repairs ``replicas`` makes."""
        with self._lock:
            pending = [self._pending[k] for k in self._pending_of.get(model_key, ())]
        observed = self.pods.indexed(model_key)
        seen = {(v.namespace, v.name) for v in observed}
        return [*observed, *(v for v in pending if (v.namespace, v.name) not in seen)]

    def replicas(self, model_key: str) -> list[Replica]:
        """The model's replicas; those on a lost node are force-deleted and left out, so the
        controller starts their replacements elsewhere (what taint eviction does, sooner)."""
        lost = self._lost_nodes()
        out = []
        for view in self.views(model_key):
            if view.placement is not None and view.placement.node in lost:
                log.info(
                    "%s/%s: node %s lost; replacing", view.namespace, view.name, view.placement.node
                )
                self.stop_replica(f"{view.namespace}/{view.name}", force=True)
                continue
            self._repair_claim(view)
            out.append(view.replica())
        if out:
            self._sync_pool(model_key)
        return sorted(out, key=lambda r: r.id)

    def _repair_claim(self, view: PodView) -> None:
        """Write again the claim of a pod whose claim is missing or does not name it as an
        owner: what an operator killed between writing a pod and its claim leaves behind."""
        if not view.uid or view.placement is None or view.phase is ReplicaPhase.STOPPING:
            return
        if time.time() - view.created < REPAIR_AFTER_S:  # its writer may be on it right now
            return
        name = self._claim_name(view.namespace, view.name, view.placement)
        if name is None:
            return
        found = self.claims.get((view.namespace, name))
        if found is not None and view.name in found.owners:
            return
        marker = (view.namespace, view.name)
        with self._lock:
            if marker in self._repairing:
                return
            self._repairing.add(marker)
        log.info("%s/%s: writing its claim %s again", view.namespace, view.name, name)
        self._writers.submit(self._rewrite_claim, view, name, marker)

    def _rewrite_claim(self, view: PodView, name: str, marker: Key) -> None:
        assert view.placement is not None
        try:
            claim = self._render_claim(view.namespace, view.model, view.placement, name)
            self._apply_claim(claim, view.placement, view.namespace, view.name, view.uid)
        except (ApiError, httpx.HTTPError, OSError, BackendError) as exc:
            log.warning("claim %s/%s: %s", view.namespace, name, exc)
        finally:
            with self._lock:
                self._repairing.discard(marker)

    def _lost_nodes(self) -> set[str]:
        with self._lock:
            return set(self._lost)

    def _unpend(self, key: Key) -> None:
        """Forget a pod decided here (seen by the informer now, or never created); lock held."""
        view = self._pending.pop(key, None)
        if view is not None:
            keys = self._pending_of.get(view.model_key)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._pending_of[view.model_key]

    def start_replica(self, model: Model, revision: str) -> Replica:
        """Decide the replica's name and device now; its Pod and claim are written by the
        writer pool, and until the informer sees the Pod it counts as Starting."""
        key = model.key
        stored = self._stored(key)
        if stored is None:
            raise BackendError(f"model {model.metadata.name}: not found on the cluster")
        owner = stored.uid
        namespace = model.metadata.namespace
        with self._lock:
            failed = self._failures.get(key)
            if failed is not None:
                count, at, message = failed
                wait_s = min(FAILURE_BACKOFF_S * 2 ** (count - 1), FAILURE_BACKOFF_MAX_S)
                if time.monotonic() - at < wait_s:  # the controller reports it and retries
                    raise BackendError(f"creating a replica failed ({count}x): {message}")
            taken = {v.name for v in self.views(key)}
            slot = next(
                i
                for i in range(len(taken) + 1)
                if f"{model.metadata.name}-{revision}-{i}" not in taken
            )
            name = f"{model.metadata.name}-{revision}-{slot}"
            placement = self._place(model, name)
            claim_name = self._claim_name(namespace, name, placement)
            view = PodView(
                namespace, name, "", model.metadata.name, revision, ReplicaPhase.STARTING,
                placement=placement, created=time.time(),
            )  # fmt: skip
            self._pending[(namespace, name)] = view
            self._pending_of.setdefault(view.model_key, set()).add((namespace, name))
        new = _NewReplica(self._json_of(model), owner, revision, name, placement, claim_name)
        self._writers.submit(self._create, new)
        return view.replica()

    def _json_of(self, model: Model) -> str:
        """The Model as JSON, one string for the replicas a reconcile starts together (the
        controller starts a Model's replicas in a row: 10,000 decided at once share 1,000)."""
        last = self._last_json
        if last is None or last[0] is not model:
            last = self._last_json = (model, model.model_dump_json(by_alias=True))
        return last[1]

    def _create(self, new: _NewReplica) -> None:
        """In a writer thread: render, then write the Service (once), the Pod, then the claim
        naming the Pod as owner. A failure forgets the replica and asks for a reconcile, which
        decides again. Rendering here, not when deciding, keeps a backlog of thousands of
        decided replicas small: a rendered Pod and claim take about 13 KiB as Python objects.
        """
        model, placement = Model.model_validate_json(new.model_json), new.placement
        model_key = model.key
        manifest = pods.replica_pod(
            model, new.revision, new.name, new.owner, placement, new.claim_name
        )
        if placement.request.is_share and placement.request.sharing == "mps":
            percent = max(1, placement.request.gpu_milli // 10)
            manifest["spec"]["containers"][0]["env"].append(
                {"name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": str(percent)}
            )
        namespace, name = model.metadata.namespace, new.name
        try:
            claim = None
            if new.claim_name is not None:
                claim = self._render_claim(
                    namespace, model.metadata.name, placement, new.claim_name
                )
            self._ensure_service(model, new.owner)
            created = pod_view(self._apply(Pod, manifest))
            if claim is not None:
                self._apply_claim(claim, placement, namespace, name, created.uid)
        except (ApiError, httpx.HTTPError, OSError, BackendError) as exc:
            log.warning("creating %s/%s failed: %s", namespace, name, exc)
            with self._lock:
                self._unpend((namespace, name))
                count = self._failures.get(model_key, (0, 0.0, ""))[0] + 1
                self._failures[model_key] = (count, time.monotonic(), str(exc))
            self._forget(namespace, name)
            return
        with self._lock:
            self._failures.pop(model_key, None)

    def stop_replica(self, replica_id: str, force: bool = False) -> None:
        """Delete the pod; ``force`` for a pod on a lost node, whose kubelet will never confirm."""
        namespace, name = replica_id.split("/", 1)
        try:
            self._client.delete(Pod, name, namespace=namespace, grace_period=0 if force else None)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        self._count_write()

    def remove_model_objects(self, model_key: str) -> None:
        """Delete what a deleted Model made besides its pods (its Service, InferencePool and
        InferenceObjective) before the finalizer goes, so nothing is left for the garbage
        collector to find later."""
        _, namespace, name = model_key.split("/", 2)
        kinds: list[Any] = [Service]
        if self._interop_installed():
            kinds += [InferenceObjective, InferencePool]
        for kind in kinds:
            try:
                self._client.delete(kind, name, namespace=namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            self._count_write()
        with self._lock:
            self._services = {s for s in self._services if s[:2] != (namespace, name)}
            self._pools.pop((namespace, name), None)

    def _forget(self, namespace: str, name: str) -> None:
        with self._lock:
            counted = self._counted.pop((namespace, name), None)
            if counted is not None and self._view is not None:
                self._view.release(counted)

    def offered_sizes(self) -> frozenset[str]:
        """The replica sizes the cluster's nodes publish: ``gpu`` where a node has a whole GPU,
        and the profile of every MIG instance (the sizes the sizing policy may pick from)."""
        with self._lock:
            lost = set(self._lost)
        return frozenset(
            device.mig.profile if device.mig is not None else WHOLE_GPU
            for node, devices in self.slices.items()
            if node and node not in lost
            for device in devices
        )

    def cold_start_s(self, model_key: str) -> float:
        """Median seconds from pod creation to Ready over the model's ready replicas."""
        starts = [
            v.ready_at - v.created
            for v in self.views(model_key)
            if v.ready_at is not None and v.ready_at >= v.created
        ]
        return statistics.median(starts) if starts else DEFAULT_COLD_START_S

    # --- placement --------------------------------------------------------------------------

    def _cluster(self) -> ClusterView:
        if self._view is None:
            slices: dict[str, list[Device]] = {}
            for node, devices in self.slices.items():
                if node:
                    slices.setdefault(node, []).extend(devices)
            foreign = [d for c in self.claims.items() if not c.managed for d in c.allocated]
            placed = {
                (v.namespace, v.name): v.placement
                for v in [*self.pods.items(), *self._pending.values()]
                if v.placement is not None
            }
            self._view = ClusterView(self.nodes.items(), slices, [], foreign)
            self._counted = {k: p for k, p in placed.items() if p and self._view.take(p)}
        return self._view

    def _policy(self, view: ClusterView) -> Policy:
        """kapell's policy, learning the workload's shapes from the replicas already placed."""
        shapes = frozenset(
            (p.request.gpu_count, p.request.gpu_milli, p.request.mig_profile)
            for p in self._counted.values()
        )
        policy = self._policies.get(shapes)
        if policy is None:
            workload = [p.request for p in self._counted.values()]
            policy = make_policy(self._policy_name if workload else "best-fit", workload)
            self._policies = {shapes: policy}
        return policy

    def _place(self, model: Model, name: str) -> Placement:
        """Decide node and device, and count them taken at once (before the pod is seen)."""
        view = self._cluster()
        # Named after the Model: its replicas' requests are equal, kept as one (``one_copy``).
        request = one_copy(request_for(model, model.metadata.name, view.inventory.models))
        decision = self._policy(view).select(view.inventory, request, np.random.default_rng(0))
        if decision is None:
            raise UnschedulableError(_unschedulable_message(model, request, view))
        placement = Placement(request, decision.node, decision.gpu_indices, decision.mig_slice)
        view.take(placement)
        self._counted[(model.metadata.namespace, name)] = placement
        return placement

    # --- writes -----------------------------------------------------------------------------

    def _apply(self, resource: Any, manifest: dict[str, Any]) -> dict[str, Any]:
        # The answer read as plain dicts (``as_dicts``): a typed Pod decoded for each write was
        # the largest passing allocation while thousands of pods are created.
        obj = server_side_apply(self._client, as_dicts(resource), manifest)
        self._count_write()
        result: dict[str, Any] = obj.to_dict()
        return result

    def _count_write(self) -> None:
        with self._lock:
            self.writes += 1

    def _ensure_service(self, model: Model, owner: str) -> None:
        key = (model.metadata.namespace, model.metadata.name, owner)
        with self._lock:
            if key in self._services:
                return
            self._services.add(key)
        try:
            self._apply(Service, pods.model_service(model, owner))
        except BaseException:
            with self._lock:
                self._services.discard(key)
            raise

    def _interop_installed(self) -> bool:
        """Whether the Gateway API Inference Extension's CRDs are installed (looked up again
        every minute while they are not; said once in the log)."""
        with self._lock:
            checked = self._interop_checked
        now = time.monotonic()
        if checked is not None and (checked[1] or now - checked[0] < INTEROP_RECHECK_S):
            return checked[1]
        missing = []
        for kind in (inferencepool.POOL, inferencepool.OBJECTIVE):
            try:
                self._client.get(CustomResourceDefinition, kind.crd_name)
            except ApiError as exc:
                if exc.status.code not in (403, 404):
                    raise
                missing.append(f"{kind.crd_name} ({exc.status.code})")
        if missing and checked is None:
            log.info(
                "Gateway API Inference Extension CRDs not readable (%s): no InferencePools "
                "until they are",
                ", ".join(missing),
            )
        with self._lock:
            self._interop_checked = (now, not missing)
        return not missing

    def _sync_pool(self, model_key: str) -> None:
        """Have a writer apply the InferencePool and InferenceObjective of a Model that has
        replicas, once per Model object and priority, while the CRDs are installed."""
        stored = self._stored(model_key)
        if stored is None or stored.resource is None or stored.deleting:
            return
        model = stored.resource
        key, applied = (
            (model.metadata.namespace, model.metadata.name),
            (stored.uid, model.spec.priority),
        )
        now = time.monotonic()
        with self._lock:
            checked = self._interop_checked
            if checked is not None and not checked[1] and now - checked[0] < INTEROP_RECHECK_S:
                return
            if self._pools.get(key) == applied:
                return
            self._pools[key] = applied
        # The key, not the parsed Model: 1,000 Models queued behind their pods held 9 MiB.
        self._writers.submit(self._apply_pool, model_key, key, applied)

    def _apply_pool(self, model_key: str, key: Key, applied: tuple[str, int]) -> None:
        """In a writer thread, with the Model as stored now; a failure is logged and retried
        at a later reconcile, and never holds up a replica."""
        stored = self._stored(model_key)
        model = None  # deleted, or made anew since (another uid): a later reconcile submits it
        if stored is not None and not stored.deleting and stored.uid == applied[0]:
            model = stored.resource
        try:
            if model is not None and self._interop_installed():
                self._apply(InferencePool, inferencepool.inference_pool(model, applied[0]))
                self._apply(
                    InferenceObjective, inferencepool.inference_objective(model, applied[0])
                )
                return
        except (ApiError, httpx.HTTPError, OSError) as exc:
            log.warning("InferencePool %s/%s: %s", key[0], key[1], exc)
        with self._lock:
            if self._pools.get(key) == applied:
                del self._pools[key]

    @staticmethod
    def _claim_name(namespace: str, pod: str, placement: Placement) -> str | None:
        request = placement.request
        if request.gpu_count == 0:
            return None
        if request.is_share:
            strategy = "mps" if request.sharing == "mps" else "ts"
            return f"gpu-share-{placement.node}-{placement.gpus[0]}-{strategy}"
        return pod

    def _device_uuids(self, name: str, placement: Placement) -> dict[int, str]:
        """The uuids of the decided devices, by GPU index, as the slices publish them now."""
        with self._lock:
            view = self._cluster()
            devices = [view.device(placement.node, g, placement.mig) for g in placement.gpus]
        if any(d is None for d in devices):
            raise BackendError(f"{name}: a decided device is no longer published")
        return {g: d.uuid for g, d in zip(placement.gpus, devices, strict=True) if d}

    def _render_claim(
        self, namespace: str, model_name: str, placement: Placement, name: str
    ) -> dict[str, Any]:
        """The claim pinning the decided device(s) by the uuids the slices publish now
        (owners are added when written)."""
        uuids = self._device_uuids(name, placement)
        decision = Decision(-1, placement.node, placement.gpus, placement.mig)
        claim = dra.resource_claim(
            placement.request,
            decision,
            namespace,
            name,
            gpu_uuids=None if placement.mig else uuids,
            mig_uuid=uuids[placement.gpus[0]] if placement.mig else None,
        )
        claim["metadata"]["labels"][pods.MODEL_LABEL] = model_name
        return claim

    def _apply_claim(
        self, claim: dict[str, Any], placement: Placement, namespace: str, pod: str, uid: str
    ) -> None:
        """Write the claim owned by its pod, or, for a shared GPU, by every pod on it.

        Sharers are remembered per claim across writes (a pod written a moment ago may not be
        in the informer yet; forgotten when the claim is deleted), and one claim is written by
        one writer at a time, so no write drops an owner another just added.
        """
        name = claim["metadata"]["name"]
        if not placement.request.is_share:
            claim["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
            ]
            self._apply(ResourceClaim, claim)
            return
        key = (namespace, name)
        with self._claim_locks[hash(key) % CLAIM_LOCK_STRIPES]:
            live = {
                v.name: (v.uid, v.placement.request.gpu_milli)
                for v in self.pods.items()
                if v.namespace == namespace
                and v.placement is not None
                and v.phase is not ReplicaPhase.STOPPING
                and self._claim_name(namespace, v.name, v.placement) == name
            }
            with self._lock:
                known = self._sharers.setdefault(key, {})
                for sharer in list(known):
                    if sharer not in live and (namespace, sharer) not in self._pending:
                        known.pop(sharer)  # gone
                known.update(live)
                known[pod] = (uid, placement.request.gpu_milli)
                sharers = dict(sorted(known.items()))
            claim["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": n, "uid": u}
                for n, (u, _) in sharers.items()
            ]
            claim["metadata"]["annotations"][SHARES_ANNOTATION] = json.dumps(
                {n: milli for n, (_, milli) in sharers.items()}, separators=(",", ":")
            )
            self._apply(ResourceClaim, claim)


def _unschedulable_message(model: Model, request: PodRequest, view: ClusterView) -> str:
    inv = view.inventory
    if request.is_mig:
        what = f"a free {request.mig_profile} MIG instance"
    elif request.is_share:
        what = f"{request.gpu_milli}/1000 of a GPU"
    elif request.gpu_count:
        what = f"{request.gpu_count} free whole GPU(s) on one node"
    else:
        what = "room"
    if request.gpu_models:
        what += f" of model {'/'.join(sorted(request.gpu_models))}"
    cpu = request.cpu_milli / 1000
    return (
        f"model {model.metadata.name}: no schedulable node has {what} with {cpu:g} CPU and "
        f"{request.memory_mib} MiB memory free ({len(inv.nodes)} schedulable nodes, "
        f"{int(inv.gpu_count.sum())} GPUs, {inv.used_gpu_milli / 1000:.1f} GPUs in use)"
    )
