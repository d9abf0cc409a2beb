"""DRA "prepare": the device variables a container gets from its claims and the node's slice."""

from __future__ import annotations

from typing import Any

import pytest

from kapell.devcluster.gpus import DRIVER, GpuPool, node_name, resource_slice
from kapell.devcluster.podclaims import device_env, device_uuids, pod_claim_names
from kapell.devcluster.podspec import Unrunnable

NODE = node_name(0)
SLICES = [resource_slice(0, GpuPool.parse("h100:8")), resource_slice(1, GpuPool.parse("h100:8"))]
MIG_SLICES = [resource_slice(0, GpuPool.parse("a100:2:1g.10gb"))]


def uuid_of(slices: list[dict[str, Any]], pool: str, device: str) -> str:
    for slice_ in slices:
        if slice_["spec"]["pool"]["name"] == pool:
            for d in slice_["spec"]["devices"]:
                if d["name"] == device:
                    return str(d["attributes"]["uuid"]["string"])
    raise KeyError(device)


def claim(name: str, *results: tuple[str, str, str]) -> dict[str, Any]:
    """A ResourceClaim allocated to (request, pool, device) results."""
    allocation = {
        "devices": {
            "results": [
                {"request": r, "driver": DRIVER, "pool": p, "device": d} for r, p, d in results
            ]
        }
    }
    return {"metadata": {"name": name}, "status": {"allocation": allocation} if results else {}}


def pod(claims: list[dict[str, Any]], uses: list[dict[str, str]], **status: Any) -> dict[str, Any]:
    container = {"name": "main", "resources": {"claims": uses}}
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": NODE, "containers": [container], "resourceClaims": claims},
        "status": status,
    }


def test_one_gpu_claim_sets_both_variables_to_the_published_uuid() -> None:
    manifest = pod([{"name": "gpu", "resourceClaimName": "c1"}], [{"name": "gpu"}])
    claims = {"c1": claim("c1", ("gpu", NODE, "gpu-3"))}
    uuids = device_uuids(manifest, manifest["spec"]["containers"][0], claims, SLICES)
    wanted = uuid_of(SLICES, NODE, "gpu-3")
    assert uuids == [wanted]
    assert wanted.startswith("GPU-")
    assert device_env(uuids) == {"NVIDIA_VISIBLE_DEVICES": wanted, "CUDA_VISIBLE_DEVICES": wanted}


def test_template_claim_name_comes_from_pod_status() -> None:
    manifest = pod(
        [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
        [{"name": "gpu"}],
        resourceClaimStatuses=[{"name": "gpu", "resourceClaimName": "p-gpu-x7k2"}],
    )
    assert pod_claim_names(manifest) == {"gpu": "p-gpu-x7k2"}
    claims = {"p-gpu-x7k2": claim("p-gpu-x7k2", ("gpu", NODE, "gpu-0"), ("gpu", NODE, "gpu-5"))}
    uuids = device_uuids(manifest, manifest["spec"]["containers"][0], claims, SLICES)
    assert uuids == [uuid_of(SLICES, NODE, "gpu-0"), uuid_of(SLICES, NODE, "gpu-5")]
    assert device_env(uuids)["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids)


def test_mig_device_gets_its_own_mig_uuid() -> None:
    device = "gpu-1-mig-1g10gb-19-3"  # gpu-<parentMinor>-mig-<profile>-<profileId>-<start>
    manifest = pod([{"name": "mig", "resourceClaimName": "c"}], [{"name": "mig"}])
    uuids = device_uuids(
        manifest, manifest["spec"]["containers"][0], {"c": claim("c", ("mig", NODE, device))},
        MIG_SLICES,
    )  # fmt: skip
    assert uuids == [uuid_of(MIG_SLICES, NODE, device)]
    assert uuids[0].startswith("MIG-")


def test_pods_sharing_a_claim_see_the_same_devices() -> None:
    shared = {"share": claim("share", ("gpu", NODE, "gpu-7"))}
    seen = []
    for _ in range(2):
        manifest = pod([{"name": "gpu", "resourceClaimName": "share"}], [{"name": "gpu"}])
        seen.append(device_uuids(manifest, manifest["spec"]["containers"][0], shared, SLICES))
    assert seen[0] == seen[1] == [uuid_of(SLICES, NODE, "gpu-7")]


def test_only_the_requests_a_container_names_reach_it() -> None:
    manifest = pod([{"name": "gpus", "resourceClaimName": "c"}], [{"name": "gpus", "request": "a"}])
    claims = {"c": claim("c", ("a", NODE, "gpu-1"), ("b", NODE, "gpu-2"), ("a/sub", NODE, "gpu-4"))}
    uuids = device_uuids(manifest, manifest["spec"]["containers"][0], claims, SLICES)
    assert uuids == [uuid_of(SLICES, NODE, "gpu-1"), uuid_of(SLICES, NODE, "gpu-4")]


def test_container_without_claims_gets_no_device_variables() -> None:
    manifest = pod([{"name": "gpu", "resourceClaimName": "c"}], [])
    claims = {"c": claim("c", ("gpu", NODE, "gpu-1"))}
    assert device_uuids(manifest, manifest["spec"]["containers"][0], claims, SLICES) == []
    assert device_env([]) == {}


@pytest.mark.parametrize(
    ("claims", "reason", "says"),
    [
        ({"c": claim("c")}, "ContainerCreating", "not allocated"),
        ({}, "ContainerCreating", "not made yet"),
        ({"c": claim("c", ("gpu", node_name(1), "gpu-1"))}, "ContainerCreating", "not published"),
        ({"c": claim("c", ("gpu", NODE, "gpu-99"))}, "ContainerCreating", "not published"),
    ],
)
def test_a_claim_that_cannot_be_prepared_keeps_the_container_waiting(
    claims: dict[str, Any], reason: str, says: str
) -> None:
    manifest = pod([{"name": "gpu", "resourceClaimName": "c"}], [{"name": "gpu"}])
    with pytest.raises(Unrunnable) as raised:
        device_uuids(manifest, manifest["spec"]["containers"][0], claims, SLICES)
    assert raised.value.reason == reason
    assert says in raised.value.message


def test_container_naming_an_unlisted_claim_is_a_config_error() -> None:
    manifest = pod([], [{"name": "gpu"}])
    with pytest.raises(Unrunnable, match="does not list") as raised:
        device_uuids(manifest, manifest["spec"]["containers"][0], {}, SLICES)
    assert raised.value.reason == "CreateContainerConfigError"
