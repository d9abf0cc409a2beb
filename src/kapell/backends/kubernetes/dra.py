"""Render a placement decision as Kubernetes Dynamic Resource Allocation objects.

The decision is already made (``kapell.policy.placement``); the claim only has to ask the
NVIDIA DRA driver for exactly those devices. A ``resource.k8s.io/v1`` ResourceClaim
(Kubernetes 1.34+) requests devices of class ``gpu.nvidia.com`` (whole GPUs, or one
shared by time-slicing or MPS) or ``mig.nvidia.com`` (a MIG instance), and a CEL selector
pins the device by the attributes the driver publishes: ``index`` for a GPU, ``profile``
and ``parentIndex`` for a MIG device. The node is pinned on the Pod (``pod_fields``),
since a claim is node-agnostic until allocated. Sharing goes in the opaque ``GpuConfig``
of the driver's ``resource.nvidia.com/v1beta1`` API.
"""

from __future__ import annotations

from typing import Any

from kapell.policy.placement.inventory import Decision
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
DRIVER = "gpu.nvidia.com"
DRIVER_CONFIG_API = "resource.nvidia.com/v1beta1"
REQUEST_NAME = "gpu"

Manifest = dict[str, Any]


def _selector(req: PodRequest, decision: Decision) -> str:
    attrs = f"device.attributes['{DRIVER}']"
    if req.is_mig:
        assert decision.mig_slice is not None
        return (
            f"{attrs}.profile == '{decision.mig_slice.profile}' && "
            f"{attrs}.parentIndex == {decision.gpu_indices[0]}"
        )
    if len(decision.gpu_indices) == 1:
        return f"{attrs}.index == {decision.gpu_indices[0]}"
    return f"{attrs}.index in [{', '.join(str(g) for g in decision.gpu_indices)}]"


def _sharing(req: PodRequest) -> Manifest:
    if req.sharing == "mps":
        percent = max(1, req.gpu_milli * 100 // GPU_MILLI)
        return {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": percent}}
    return {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Default"}}


def resource_claim(req: PodRequest, decision: Decision, namespace: str, name: str) -> Manifest:
    """The ResourceClaim that asks for exactly the devices in ``decision``."""
    if req.gpu_count == 0:
        raise ValueError(f"{req.name}: a request without GPUs needs no ResourceClaim")
    exactly: Manifest = {
        "deviceClassName": MIG_CLASS if req.is_mig else GPU_CLASS,
        "allocationMode": "ExactCount",
        "count": len(decision.gpu_indices),
        "selectors": [{"cel": {"expression": _selector(req, decision)}}],
    }
    spec: Manifest = {"devices": {"requests": [{"name": REQUEST_NAME, "exactly": exactly}]}}
    if req.is_share:
        spec["devices"]["config"] = [
            {
                "requests": [REQUEST_NAME],
                "opaque": {
                    "driver": DRIVER,
                    "parameters": {
                        "apiVersion": DRIVER_CONFIG_API,
                        "kind": "GpuConfig",
                        "sharing": _sharing(req),
                    },
                },
            }
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kapell"},
            "annotations": {"kapell.dev/node": decision.node},
        },
        "spec": spec,
    }


def pod_fields(decision: Decision, claim_name: str) -> Manifest:
    """The Pod spec fields that bind the pod to the decided node and to its claim."""
    return {
        "nodeName": decision.node,
        "resourceClaims": [{"name": REQUEST_NAME, "resourceClaimName": claim_name}],
    }
