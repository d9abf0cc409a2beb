"""DRA rendering: claims validate against the Kubernetes 1.34 schema, and their CEL selectors,
evaluated offline (cel-python) against the fake driver's ResourceSlices, pick exactly the decided
devices, naming only attributes that the driver publishes."""

from __future__ import annotations

import copy
import re
from typing import Any

import celpy
import kubernetes_validate
import pytest
from celpy import celtypes

from kapell.api import nvidia_dra as nv
from kapell.api.units import parse_quantity
from kapell.backends.kubernetes.dra import gpu_uuids_by_node, pod_fields, resource_claim
from kapell.devcluster.gpus import GpuPool, device_classes, gpu_uuid, node_name, resource_slice
from kapell.policy.placement.inventory import Decision
from kapell.policy.placement.mig import MigSlice
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

K8S_VERSION = "1.34.0"  # resource.k8s.io/v1 is GA from 1.34

# The fake cluster these tests select from: nodes 0-2 with 8 H100, node 3 with 2 A100 in MIG
# mode (3g.40gb, two instances per GPU), node 4 with 8 L4.
POOLS = {
    0: "h100:8",
    1: "h100:8",
    2: "h100:8",
    3: "a100:2:3g.40gb",
    4: "l4:8",
}
SLICES = {i: resource_slice(i, GpuPool.parse(p)) for i, p in POOLS.items()}
UUIDS = gpu_uuids_by_node(SLICES.values())


def _decision(node: int, gpus: tuple[int, ...], mig: MigSlice | None = None) -> Decision:
    return Decision(node, node_name(node), gpus, mig)


CASES = {
    "one-gpu": (PodRequest("a", 1000, 1024, 1, GPU_MILLI), _decision(2, (2,))),
    "four-gpus": (PodRequest("b", 1000, 1024, 4, GPU_MILLI), _decision(0, (0, 1, 4, 5))),
    "time-sliced": (PodRequest("c", 1000, 1024, 1, 300), _decision(1, (7,))),
    "mps": (
        PodRequest("d", 1000, 1024, 1, 470, sharing="mps", min_gpu_memory_mib=20480),
        _decision(1, (6,)),
    ),
    "mig": (
        PodRequest("e", 1000, 1024, 1, 0, mig_profile="3g.40gb"),
        _decision(3, (1,), MigSlice("3g.40gb", 4)),
    ),
}
EXPECTED = {  # device names in the decided node's slice that the claim may get
    "one-gpu": {"gpu-2"},
    "four-gpus": {"gpu-0", "gpu-1", "gpu-4", "gpu-5"},
    "time-sliced": {"gpu-7"},
    "mps": {"gpu-6"},
    "mig": {"gpu-1-mig-3g40gb-9-0", "gpu-1-mig-3g40gb-9-4"},  # the driver has no placement attr
}


def claim(case: str, **kwargs: Any) -> dict[str, Any]:
    req, decision = CASES[case]
    kwargs.setdefault("gpu_uuids", UUIDS[decision.node])
    return resource_claim(req, decision, "team-a", f"claim-{case}", **kwargs)


def request_of(manifest: dict[str, Any]) -> dict[str, Any]:
    exactly: dict[str, Any] = manifest["spec"]["devices"]["requests"][0]["exactly"]
    return exactly


def selector(manifest: dict[str, Any]) -> str:
    [sel] = request_of(manifest)["selectors"]
    expression: str = sel["cel"]["expression"]
    return expression


def validate(manifest: dict[str, object]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# --- the DRA CEL environment, for one device of a ResourceSlice --------------------------------

_CEL = celpy.Environment()


def _quantity(text: Any) -> celtypes.IntType:
    return celtypes.IntType(int(parse_quantity(str(text))))


def _compare_to(a: Any, b: Any) -> celtypes.IntType:
    return celtypes.IntType((a > b) - (a < b))


def device_variable(driver: str, device: dict[str, Any]) -> dict[str, Any]:
    """``device`` as a DRA CEL expression sees it: attributes and capacity by domain."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in device.get("attributes", {}).items():
        domain, _, ident = name.rpartition("/")
        attributes.setdefault(domain or driver, {})[ident] = next(iter(value.values()))
    capacity: dict[str, dict[str, Any]] = {}
    for name, value in device.get("capacity", {}).items():
        domain, _, ident = name.rpartition("/")
        capacity.setdefault(domain or driver, {})[ident] = int(parse_quantity(value["value"]))
    return {"driver": driver, "attributes": attributes, "capacity": capacity}


def matches(expression: str, driver: str, device: dict[str, Any]) -> bool:
    program = _CEL.program(
        _CEL.compile(expression), functions={"quantity": _quantity, "compareTo": _compare_to}
    )
    result = program.evaluate({"device": celpy.json_to_cel(device_variable(driver, device))})
    if isinstance(result, Exception):
        raise result
    return bool(result)


def allocatable(manifest: dict[str, Any], node: int) -> set[str]:
    """Names of the devices on ``node`` that the claim's class and selectors both accept."""
    request = request_of(manifest)
    [cls] = [c for c in device_classes() if c["metadata"]["name"] == request["deviceClassName"]]
    expressions = [s["cel"]["expression"] for s in cls["spec"]["selectors"]]
    expressions += [s["cel"]["expression"] for s in request.get("selectors", [])]
    spec = SLICES[node]["spec"]
    return {
        d["name"]
        for d in spec["devices"]
        if all(matches(e, spec["driver"], d) for e in expressions)
    }


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_claim_validates_against_kubernetes_schema(case: str) -> None:
    validate(claim(case))
    validate(claim(case, gpu_uuids=None))


def test_schema_check_can_fail() -> None:
    manifest = claim("one-gpu")
    broken = copy.deepcopy(manifest)
    request_of(broken)["count"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    unknown = copy.deepcopy(manifest)
    request_of(unknown)["nodeName"] = "node-3"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown)


@pytest.mark.parametrize("case", sorted(CASES))
def test_selector_picks_exactly_the_decided_devices(case: str) -> None:
    _, decision = CASES[case]
    assert allocatable(claim(case), decision.node_index) == EXPECTED[case]
    assert request_of(claim(case))["count"] == len(decision.gpu_indices)


def test_a_selector_on_an_attribute_the_driver_does_not_publish_cannot_pass() -> None:
    # The old selector (`index`, removed from the driver in v25.8) fails on every device.
    device = SLICES[0]["spec"]["devices"][2]
    with pytest.raises(celpy.CELEvalError):
        matches(f"{nv.cel_attribute('index')} == 2", nv.DRIVER, device)


_REFERENCE = re.compile(r"device\.(attributes|capacity)\['([^']+)'\]\.(\w+)")


@pytest.mark.parametrize("case", sorted(CASES))
def test_selector_names_only_what_the_fake_driver_publishes(case: str) -> None:
    _, decision = CASES[case]
    devices = SLICES[decision.node_index]["spec"]["devices"]
    published = {
        "attributes": {n for d in devices for n in d["attributes"]},
        "capacity": {n for d in devices for n in d["capacity"]},
    }
    for unpinned in (False, True):
        manifest = claim(case, gpu_uuids=None) if unpinned else claim(case)
        for expression in [
            s["cel"]["expression"] for s in request_of(manifest).get("selectors", [])
        ]:
            refs = _REFERENCE.findall(expression)
            assert refs, expression
            for what, domain, ident in refs:
                name = ident if domain == nv.DRIVER else f"{domain}/{ident}"
                assert name in published[what], (case, name)
    expected = nv.MIG_ATTRIBUTES if case == "mig" else nv.GPU_ATTRIBUTES
    assert {n for d in devices for n in d["attributes"]} == set(expected)


def test_without_uuids_the_claim_narrows_by_class_profile_and_memory_only() -> None:
    mig = claim("mig", gpu_uuids=None)
    assert allocatable(mig, 3) == {d["name"] for d in SLICES[3]["spec"]["devices"]}
    assert mig["metadata"]["annotations"] == {
        "kapell.dev/node": node_name(3),
        "kapell.dev/gpus": "1",
    }
    assert "selectors" not in request_of(claim("one-gpu", gpu_uuids=None))
    big = PodRequest("big", 1000, 1024, 1, GPU_MILLI, min_gpu_memory_mib=40 * 1024)
    on_l4 = resource_claim(big, _decision(4, (0,)), "ns", "c")
    assert allocatable(on_l4, 4) == set()  # an L4 has 23034 MiB
    assert len(allocatable(on_l4, 0)) == 8  # an H100 has 81559 MiB


def test_a_gpu_without_a_known_uuid_is_an_error() -> None:
    req, decision = CASES["four-gpus"]
    with pytest.raises(ValueError, match=r"no UUID known for GPU \[4, 5\]"):
        resource_claim(req, decision, "ns", "c", gpu_uuids={0: "GPU-a", 1: "GPU-b"})


def test_gpu_uuids_by_node_reads_the_driver_slices() -> None:
    assert UUIDS[node_name(0)] == {i: gpu_uuid(node_name(0), i) for i in range(8)}
    assert UUIDS[node_name(3)] == {i: gpu_uuid(node_name(3), i) for i in range(2)}  # MIG parents
    other = copy.deepcopy(SLICES[1])
    other["spec"]["driver"] = "gpu.example.com"
    assert node_name(1) not in gpu_uuids_by_node([other])


def test_sharing_config_only_for_shared_gpus() -> None:
    def sharing(case: str, **kwargs: Any) -> object:
        config = claim(case, **kwargs)["spec"]["devices"].get("config")
        if not config:
            return None
        params = config[0]["opaque"]["parameters"]
        assert (params["apiVersion"], params["kind"]) == (
            "resource.nvidia.com/v1beta1",
            "GpuConfig",
        )
        return params["sharing"]

    assert sharing("one-gpu") is None and sharing("mig") is None
    assert sharing("time-sliced") == {
        "strategy": "TimeSlicing",
        "timeSlicingConfig": {"interval": "Default"},
    }
    assert sharing("time-sliced", time_slice_interval="Long") == {
        "strategy": "TimeSlicing",
        "timeSlicingConfig": {"interval": "Long"},
    }
    assert sharing("mps") == {
        "strategy": "MPS",
        "mpsConfig": {
            "defaultActiveThreadPercentage": 47,
            "defaultPinnedDeviceMemoryLimit": "20480Mi",
        },
    }
    no_memory = PodRequest("f", 1000, 1024, 1, 250, sharing="mps")
    config = resource_claim(no_memory, _decision(1, (0,)), "ns", "c")["spec"]["devices"]["config"]
    assert config[0]["opaque"]["parameters"]["sharing"]["mpsConfig"] == {
        "defaultActiveThreadPercentage": 25
    }
    with pytest.raises(ValueError, match="time_slice_interval 'Forever'"):
        claim("time-sliced", time_slice_interval="Forever")


def test_pod_fields_pin_the_node_by_affinity_and_bind_the_claim() -> None:
    _, decision = CASES["one-gpu"]
    fields = pod_fields(decision, "claim-x")
    assert "nodeName" not in fields  # that would bypass the scheduler, which allocates claims
    terms = fields["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name(2)]}]}
    ]
    assert fields["resourceClaims"] == [{"name": "gpu", "resourceClaimName": "claim-x"}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "containers": [{"name": "c", "image": "i", "resources": {"claims": [{"name": "gpu"}]}}],
            **fields,
        },
    }
    validate(pod)


def test_cpu_only_request_has_no_claim() -> None:
    with pytest.raises(ValueError, match="needs no ResourceClaim"):
        resource_claim(PodRequest("cpu", 1000), Decision(0, "n"), "ns", "c")


def test_device_names_follow_the_driver() -> None:
    assert nv.gpu_device_name(3) == "gpu-3"
    assert nv.mig_device_name(0, "1g.10gb", 19, 6) == "gpu-0-mig-1g10gb-19-6"
    assert nv.mig_device_name(1, "1g.10gb+me", 20, 0) == "gpu-1-mig-1g10gb-me-20-0"
    assert [nv.minor_of(n) for n in ("gpu-7", "gpu-1-mig-1g10gb-19-6", "gpu-vfio-1", "x")] == [
        7,
        1,
        None,
        None,
    ]
    assert nv.cel_attribute(nv.PCI_BUS_ID) == "device.attributes['resource.kubernetes.io'].pciBusID"
