"""The real kube-scheduler allocates DRA claims against the fake driver's ResourceSlices, including
the claims and pod fields that kapell renders (``backends/kubernetes/dra.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from kubeobjects import busybox_pod, eventually, published_devices
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Event, Pod
from lightkube.resources.resource_v1 import ResourceClaim, ResourceSlice

from kapell.backends.kubernetes.dra import (
    CONTAINER_CLAIMS,
    gpu_uuids_by_node,
    pod_fields,
    resource_claim,
)
from kapell.policy.placement.inventory import Decision
from kapell.policy.placement.mig import MigSlice
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

DRIVER = "gpu.nvidia.com"


def running_pod(kube: Client, namespace: str, name: str) -> Pod:
    def probe() -> Pod | None:
        pod = kube.get(Pod, name, namespace=namespace)
        return pod if pod.status and pod.status.phase == "Running" else None

    return eventually(probe, f"pod {namespace}/{name} Running")


def allocated_devices(kube: Client, namespace: str, claim_name: str) -> list[tuple[str, str]]:
    claim = kube.get(ResourceClaim, claim_name, namespace=namespace)
    assert claim.status and claim.status.allocation, f"claim {claim_name} is not allocated"
    results = claim.status.allocation.devices.results
    assert all(r.driver == DRIVER for r in results)
    return [(r.pool, r.device) for r in results]


def test_pod_with_claim_template_is_scheduled_on_a_gpu_node_with_a_published_device(
    kube: Client, namespace: str
) -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-gpu"},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}
        ]}}},
    }  # fmt: skip
    kube.create(from_dict(template), namespace=namespace)
    pod_manifest = busybox_pod("trainer", {"gpu": {"resourceClaimTemplateName": "one-gpu"}})
    kube.create(from_dict(pod_manifest), namespace=namespace)

    pod = running_pod(kube, namespace, "trainer")
    [claim_status] = pod.status.resourceClaimStatuses
    [(pool, device)] = allocated_devices(kube, namespace, claim_status.resourceClaimName)
    published = published_devices(kube)[(pool, device)]
    assert published["node"] == pod.spec.nodeName
    assert published["type"] == "gpu"
    assert published["productName"] == "NVIDIA H100 80GB HBM3"
    claim = kube.get(ResourceClaim, claim_status.resourceClaimName, namespace=namespace)
    assert [ref.name for ref in claim.status.reservedFor] == ["trainer"]


def test_claim_pinned_by_cel_selector_gets_exactly_that_device(
    kube: Client, namespace: str
) -> None:
    whole_gpus = {k: v for k, v in published_devices(kube).items() if v["type"] == "gpu"}
    (pool, device), wanted = sorted(whole_gpus.items())[-1]  # the last GPU of the last node
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "pinned"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "gpu.nvidia.com",
            "selectors": [{"cel": {
                "expression": f"device.attributes['{DRIVER}'].uuid == '{wanted['uuid']}'"
            }}],
        }}]}},
    }  # fmt: skip
    kube.create(from_dict(claim), namespace=namespace)
    kube.create(
        from_dict(busybox_pod("pinned", {"gpu": {"resourceClaimName": "pinned"}})),
        namespace=namespace,
    )

    pod = running_pod(kube, namespace, "pinned")
    assert allocated_devices(kube, namespace, "pinned") == [(pool, device)]
    assert pod.spec.nodeName == wanted["node"]


def test_mig_claim_gets_a_mig_device_of_the_asked_profile(kube: Client, namespace: str) -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-slice"},
        "spec": {"spec": {"devices": {"requests": [{"name": "mig", "exactly": {
            "deviceClassName": "mig.nvidia.com",
            "selectors": [{"cel": {"expression": f"device.attributes['{DRIVER}'].profile == '1g.10gb'"}}],
        }}]}}},
    }  # fmt: skip
    kube.create(from_dict(template), namespace=namespace)
    kube.create(
        from_dict(busybox_pod("small", {"mig": {"resourceClaimTemplateName": "one-slice"}})),
        namespace=namespace,
    )

    pod = running_pod(kube, namespace, "small")
    [claim_status] = pod.status.resourceClaimStatuses
    [key] = allocated_devices(kube, namespace, claim_status.resourceClaimName)
    published = published_devices(kube)[key]
    assert (published["type"], published["profile"]) == ("mig", "1g.10gb")
    assert published["node"] == pod.spec.nodeName
    assert published["parentUUID"].startswith("GPU-")


def test_unsatisfiable_claim_leaves_the_pod_pending_with_the_scheduler_reason(
    kube: Client, namespace: str
) -> None:
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "too-many"},
        "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
            "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 9,
        }}]}},
    }  # fmt: skip
    kube.create(from_dict(claim), namespace=namespace)
    kube.create(
        from_dict(busybox_pod("greedy", {"gpus": {"resourceClaimName": "too-many"}})),
        namespace=namespace,
    )

    def unschedulable() -> Any:
        pod = kube.get(Pod, "greedy", namespace=namespace)
        conditions = pod.status.conditions or [] if pod.status else []
        scheduled = [c for c in conditions if c.type == "PodScheduled"]
        return scheduled[0] if scheduled and scheduled[0].status == "False" else None

    condition = eventually(unschedulable, "PodScheduled=False on pod greedy")
    assert condition.reason == "Unschedulable"
    assert "cannot allocate all claims" in condition.message
    pod = kube.get(Pod, "greedy", namespace=namespace)
    assert pod.status.phase == "Pending" and not pod.spec.nodeName
    events = kube.list(Event, namespace=namespace, fields={"involvedObject.name": "greedy"})
    assert any(e.reason == "FailedScheduling" for e in events)
    assert not kube.get(ResourceClaim, "too-many", namespace=namespace).status.allocation


KAPELL_CASES = {
    # case: (request, GPU indices on the node, MIG slice)
    "two-whole-gpus": (PodRequest("two", 1000, 1024, 2, GPU_MILLI), (3, 5), None),
    "mps-share": (
        PodRequest("mps", 1000, 1024, 1, 400, sharing="mps", min_gpu_memory_mib=20480),
        (6,),
        None,
    ),
    "mig-slice": (
        PodRequest("mig", 1000, 1024, 1, 0, mig_profile="1g.10gb"),
        (1,),
        MigSlice("1g.10gb", 0),
    ),
}


@pytest.mark.parametrize("case", sorted(KAPELL_CASES))
def test_kapell_claim_and_pod_fields_get_exactly_the_decided_devices(
    kube: Client, namespace: str, case: str
) -> None:
    req, indices, mig = KAPELL_CASES[case]
    slices = [s.to_dict() for s in kube.list(ResourceSlice)]
    by_node = gpu_uuids_by_node(slices)
    kind = "mig" if mig else "gpu"
    nodes = sorted({v["node"] for v in published_devices(kube).values() if v["type"] == kind})
    node = nodes[-1]
    decision = Decision(0, node, indices, mig)

    claim = resource_claim(req, decision, namespace, f"{case}-gpu", gpu_uuids=by_node[node])
    kube.create(from_dict(claim), namespace=namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": case},
        "spec": {
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"claims": CONTAINER_CLAIMS}}
            ],
            **pod_fields(decision, f"{case}-gpu"),
        },
    }
    kube.create(from_dict(pod), namespace=namespace)

    running = running_pod(kube, namespace, case)
    assert running.spec.nodeName == node  # placed by kube-scheduler, through the affinity
    got = allocated_devices(kube, namespace, f"{case}-gpu")
    assert {pool for pool, _ in got} == {node}
    if mig:
        [(_, device)] = got
        assert device.startswith(f"gpu-{indices[0]}-mig-1g10gb-19-"), device
    else:
        assert sorted(device for _, device in got) == [f"gpu-{i}" for i in indices]
    stored = kube.get(ResourceClaim, f"{case}-gpu", namespace=namespace).to_dict()
    if req.is_share:  # the opaque GpuConfig is stored as written
        [config] = stored["spec"]["devices"]["config"]
        assert config["opaque"]["parameters"]["sharing"]["mpsConfig"] == {
            "defaultActiveThreadPercentage": 40,
            "defaultPinnedDeviceMemoryLimit": "20480Mi",
        }
