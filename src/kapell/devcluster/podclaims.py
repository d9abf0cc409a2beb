"""DRA "prepare" on a serving node: the GPUs a container was allocated, as NVIDIA's CDI spec
would expose them.

A kubelet asks the node's DRA driver to prepare each claim of a pod; NVIDIA's driver answers
with CDI devices whose edits set ``NVIDIA_VISIBLE_DEVICES`` to the device UUIDs. Here the UUIDs
come from the fake driver's ResourceSlice (attribute ``uuid``), and ``CUDA_VISIBLE_DEVICES``
gets the same list (CUDA accepts UUIDs there), so a process sees its devices however it looks.
Only the claims a container lists in ``resources.claims`` reach it, as with CDI. Pods sharing a
claim (time-slicing, MPS) see the same devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kapell.api.nvidia_dra import DRIVER
from kapell.devcluster.podspec import Container, Pod, Unrunnable


def pod_claim_names(pod: Pod) -> dict[str, str | None]:
    """Pod claim name -> ResourceClaim name; None while a template's claim is not made yet."""
    made = {
        s["name"]: s.get("resourceClaimName")
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
    }
    names: dict[str, str | None] = {}
    for claim in pod.get("spec", {}).get("resourceClaims") or []:
        names[claim["name"]] = claim.get("resourceClaimName") or made.get(claim["name"])
    return names


def container_claims(container: Container) -> list[tuple[str, str]]:
    """(pod claim name, request name or "" for all requests) the container uses."""
    claims = (container.get("resources") or {}).get("claims") or []
    return [(c["name"], c.get("request", "")) for c in claims]


def slice_uuids(slices: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(pool, device) -> uuid for every device of the GPU driver in ``slices``."""
    found = {}
    for slice_ in slices:
        spec = slice_.get("spec", {})
        if spec.get("driver") != DRIVER:
            continue
        for device in spec.get("devices") or []:
            uuid = (device.get("attributes") or {}).get("uuid", {}).get("string")
            if uuid:
                found[(spec["pool"]["name"], device["name"])] = uuid
    return found


def _uses(request: str, result_request: str) -> bool:
    return not request or result_request == request or result_request.startswith(request + "/")


def device_uuids(
    pod: Pod,
    container: Container,
    claims: Mapping[str, Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
) -> list[str]:
    """The UUIDs of the GPUs allocated to what ``container`` uses, in allocation order.

    ``claims`` maps ResourceClaim names to the claims as read from the API.
    """
    names = pod_claim_names(pod)
    uuids = slice_uuids(slices)
    node = pod.get("spec", {}).get("nodeName", "")
    out: list[str] = []
    for pod_claim, request in container_claims(container):
        if pod_claim not in names:
            raise Unrunnable(
                "CreateContainerConfigError",
                f"container uses claim {pod_claim!r}, which spec.resourceClaims does not list",
            )
        claim_name = names[pod_claim]
        claim = claims.get(claim_name or "")
        if claim_name is None or claim is None:
            raise Unrunnable("ContainerCreating", f"resource claim for {pod_claim!r} not made yet")
        allocation = (claim.get("status") or {}).get("allocation")
        if not allocation:
            raise Unrunnable("ContainerCreating", f"resource claim {claim_name} is not allocated")
        for result in allocation.get("devices", {}).get("results") or []:
            if result.get("driver") != DRIVER or not _uses(request, result.get("request", "")):
                continue
            key = (result["pool"], result["device"])
            if result["pool"] != node or key not in uuids:
                raise Unrunnable(
                    "ContainerCreating",
                    f"resource claim {claim_name}: device {key[0]}/{key[1]} is not published "
                    f"on node {node}",
                )
            if uuids[key] not in out:
                out.append(uuids[key])
    return out


def device_env(uuids: Sequence[str]) -> dict[str, str]:
    """What NVIDIA's CDI spec sets for these devices; nothing for a container without GPUs."""
    if not uuids:
        return {}
    visible = ",".join(uuids)
    return {"NVIDIA_VISIBLE_DEVICES": visible, "CUDA_VISIBLE_DEVICES": visible}
