"""Render a placement decision as Kubernetes Dynamic Resource Allocation objects.

The decision is already made (``kapell.policy.placement``); the claim only has to ask the
NVIDIA DRA driver for exactly those devices. A ``resource.k8s.io/v1`` ResourceClaim
(Kubernetes 1.34+) requests devices of class ``gpu.nvidia.com`` (whole GPUs, or one shared by
time-slicing or MPS) or ``mig.nvidia.com`` (a MIG instance).

Which device: the driver publishes no GPU index (it did up to v25.3; see
``kapell.api.nvidia_dra``, which names every attribute and cites the driver's source). A GPU
is pinned by its ``uuid`` and a MIG device by ``parentUUID`` and ``profile``, so the caller
passes ``gpu_uuids`` (GPU index -> UUID on the decided node), read from the driver's
ResourceSlices with ``gpu_uuids_by_node``: the index kapell's placement counts is the minor in
the driver's device name (``gpu-<minor>``). Without ``gpu_uuids`` the claim still asks for the
right class, count, profile and GPU memory, and the scheduler picks among the node's devices;
the decided indices are then only recorded in the ``kapell.dev/gpus`` annotation.

The node is pinned on the Pod (``pod_fields``) by node affinity, since a claim is
node-agnostic until allocated. Sharing goes in the opaque ``GpuConfig`` of the driver's
``resource.nvidia.com/v1beta1`` API; the driver honours it only with its alpha feature gates
``TimeSlicingSettings`` / ``MPSSupport`` enabled (both off by default in v0.4.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kapell.api import nvidia_dra as nv
from kapell.api.nvidia_dra import CONFIG_API_VERSION, DRIVER, GPU_CLASS, MIG_CLASS
from kapell.policy.placement.inventory import Decision
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

DRIVER_CONFIG_API = CONFIG_API_VERSION
REQUEST_NAME = "gpu"
"""The request's name in the claim, and the claim's name in the Pod (``resourceClaims``)."""
CONTAINER_CLAIMS = [{"name": REQUEST_NAME}]
"""``resources.claims`` of each container that uses the GPU."""

Manifest = dict[str, Any]


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _selectors(
    req: PodRequest,
    decision: Decision,
    gpu_uuids: Mapping[int, str] | None,
    mig_uuid: str | None = None,
) -> list[str]:
    if req.is_mig and mig_uuid is not None:  # the very instance placement chose
        return [f"{nv.cel_attribute(nv.UUID)} == '{mig_uuid}'"]
    uuids = None
    if gpu_uuids is not None:
        missing = [i for i in decision.gpu_indices if i not in gpu_uuids]
        if missing:
            raise ValueError(f"{req.name}: no UUID known for GPU {missing} on {decision.node}")
        uuids = [gpu_uuids[i] for i in decision.gpu_indices]
    if req.is_mig:
        assert decision.mig_slice is not None
        exprs = [f"{nv.cel_attribute(nv.PROFILE)} == '{decision.mig_slice.profile}'"]
        if uuids:
            exprs.append(f"{nv.cel_attribute(nv.PARENT_UUID)} == '{uuids[0]}'")
        return exprs
    exprs = []
    if uuids and len(uuids) == 1:
        exprs.append(f"{nv.cel_attribute(nv.UUID)} == '{uuids[0]}'")
    elif uuids:
        exprs.append(f"{nv.cel_attribute(nv.UUID)} in [{_quoted(uuids)}]")
    if req.min_gpu_memory_mib > 0:
        exprs.append(_memory_at_least(req.min_gpu_memory_mib))
    return exprs


def _memory_at_least(mib: int) -> str:
    return f"device.capacity['{DRIVER}'].{nv.MEMORY}.compareTo(quantity('{mib}Mi')) >= 0"


def _sharing(req: PodRequest, interval: str) -> Manifest:
    if req.sharing == "mps":
        mps: Manifest = {"defaultActiveThreadPercentage": max(1, req.gpu_milli * 100 // GPU_MILLI)}
        if req.min_gpu_memory_mib > 0:
            mps["defaultPinnedDeviceMemoryLimit"] = f"{req.min_gpu_memory_mib}Mi"
        return {"strategy": nv.MPS, "mpsConfig": mps}
    return {"strategy": nv.TIME_SLICING, "timeSlicingConfig": {"interval": interval}}


def _claim_spec(
    req: PodRequest, count: int, selectors: list[str], time_slice_interval: str
) -> Manifest:
    """The ``spec`` of a claim (or of a template's claim): ``count`` devices of the request's
    class matching every selector, with the driver's sharing config for a share."""
    if req.gpu_count == 0:
        raise ValueError(f"{req.name}: a request without GPUs needs no ResourceClaim")
    if time_slice_interval not in nv.TIME_SLICE_INTERVALS:
        raise ValueError(
            f"time_slice_interval {time_slice_interval!r}: one of {nv.TIME_SLICE_INTERVALS}"
        )
    exactly: Manifest = {
        "deviceClassName": MIG_CLASS if req.is_mig else GPU_CLASS,
        "allocationMode": "ExactCount",
        "count": count,
    }
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": " && ".join(selectors)}}]
    spec: Manifest = {"devices": {"requests": [{"name": REQUEST_NAME, "exactly": exactly}]}}
    if req.is_share:
        spec["devices"]["config"] = [
            {
                "requests": [REQUEST_NAME],
                "opaque": {
                    "driver": DRIVER,
                    "parameters": {
                        "apiVersion": CONFIG_API_VERSION,
                        "kind": nv.GPU_CONFIG_KIND,
                        "sharing": _sharing(req, time_slice_interval),
                    },
                },
            }
        ]
    return spec


def resource_claim(
    req: PodRequest,
    decision: Decision,
    namespace: str,
    name: str,
    *,
    gpu_uuids: Mapping[int, str] | None = None,
    mig_uuid: str | None = None,
    time_slice_interval: str = "Default",
) -> Manifest:
    """The ResourceClaim that asks for exactly the devices in ``decision``.

    ``gpu_uuids`` maps GPU indices on ``decision.node`` to their UUIDs (``gpu_uuids_by_node``);
    with it the claim pins the very devices decided. ``mig_uuid``, the UUID of the decided MIG
    instance, pins that instance rather than any instance of the profile on its GPU.
    ``time_slice_interval`` is the driver's ``Default``, ``Short``, ``Medium`` or ``Long``,
    for a time-sliced share. An MPS share gets
    ``defaultActiveThreadPercentage`` from its milli-GPU and, when the request names a GPU
    memory, that memory as ``defaultPinnedDeviceMemoryLimit``.
    """
    selectors = _selectors(req, decision, gpu_uuids, mig_uuid) if req.gpu_count else []
    spec = _claim_spec(req, len(decision.gpu_indices), selectors, time_slice_interval)
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kapell"},
            "annotations": {
                "kapell.dev/node": decision.node,
                "kapell.dev/gpus": ",".join(str(i) for i in decision.gpu_indices),
            },
        },
        "spec": spec,
    }


def claim_template(
    req: PodRequest, namespace: str, name: str, *, time_slice_interval: str = "Default"
) -> Manifest:
    """A ResourceClaimTemplate for pods that no placement decision pins (a Ray worker group):
    each pod gets a claim of its own for the request's class, count, MIG profile and GPU
    memory, and kube-scheduler picks the devices on whichever node it binds the pod to."""
    selectors = []
    if req.is_mig:
        selectors.append(f"{nv.cel_attribute(nv.PROFILE)} == '{req.mig_profile}'")
    elif req.min_gpu_memory_mib > 0:
        selectors.append(_memory_at_least(req.min_gpu_memory_mib))
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kapell"},
        },
        "spec": {"spec": _claim_spec(req, req.gpu_count, selectors, time_slice_interval)},
    }


def pod_fields(decision: Decision, claim_name: str) -> Manifest:
    """The Pod spec fields that keep the pod on the decided node and bind it to its claim.

    The node is pinned by a required node affinity on the node's name, not by ``nodeName``: a
    pod created with ``nodeName`` bypasses kube-scheduler, and the scheduler is what allocates a
    ResourceClaim, so that pod's claim would never be allocated. Each container that uses the
    GPU also lists ``resources.claims: CONTAINER_CLAIMS``.
    """
    by_name = {"key": "metadata.name", "operator": "In", "values": [decision.node]}
    node_term = {"matchFields": [by_name]}
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [node_term]}
            }
        },
        "resourceClaims": [{"name": REQUEST_NAME, "resourceClaimName": claim_name}],
    }


def gpu_uuids_by_node(resource_slices: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    """Node -> GPU index (the minor in ``gpu-<minor>``) -> GPU UUID, from ResourceSlices.

    Takes ResourceSlice manifests (plain dicts, e.g. ``slice.to_dict()``); slices of other
    drivers and devices of other types are skipped. A MIG device gives its parent's UUID.
    """
    found: dict[str, dict[int, str]] = {}
    for slice_ in resource_slices:
        spec = slice_.get("spec", {})
        node = spec.get("nodeName")
        if spec.get("driver") != DRIVER or not node:
            continue
        for device in spec.get("devices") or []:
            minor = nv.minor_of(device.get("name", ""))
            attributes = device.get("attributes") or {}
            kind = (attributes.get(nv.TYPE) or {}).get("string")
            key = {nv.TYPE_GPU: nv.UUID, nv.TYPE_MIG: nv.PARENT_UUID}.get(kind or "")
            uuid = (attributes.get(key) or {}).get("string") if key else None
            if minor is not None and uuid:
                found.setdefault(node, {})[minor] = uuid
    return found
