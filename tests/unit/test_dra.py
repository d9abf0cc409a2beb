"""DRA rendering: claims validate against the Kubernetes 1.34 schema and pin the device."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from kapell.backends.kubernetes.dra import pod_fields, resource_claim
from kapell.policy.placement.inventory import Decision
from kapell.policy.placement.mig import MigSlice
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

K8S_VERSION = "1.34.0"  # resource.k8s.io/v1 is GA from 1.34

CASES = {
    "one-gpu": (PodRequest("a", 1000, 1024, 1, GPU_MILLI), Decision(3, "node-3", (2,))),
    "four-gpus": (PodRequest("b", 1000, 1024, 4, GPU_MILLI), Decision(0, "node-0", (0, 1, 4, 5))),
    "time-sliced": (PodRequest("c", 1000, 1024, 1, 300), Decision(1, "node-1", (7,))),
    "mps": (PodRequest("d", 1000, 1024, 1, 470, sharing="mps"), Decision(1, "node-1", (6,))),
    "mig": (
        PodRequest("e", 1000, 1024, 1, 0, mig_profile="3g.40gb"),
        Decision(2, "node-2", (1,), MigSlice("3g.40gb", 4)),
    ),
}


def validate(manifest: dict[str, object]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_claim_validates_against_kubernetes_schema(case: str) -> None:
    req, decision = CASES[case]
    validate(resource_claim(req, decision, "team-a", f"claim-{case}"))


def test_schema_check_can_fail() -> None:
    req, decision = CASES["one-gpu"]
    claim = resource_claim(req, decision, "team-a", "claim")
    broken = copy.deepcopy(claim)
    broken["spec"]["devices"]["requests"][0]["exactly"]["count"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    unknown = copy.deepcopy(claim)
    unknown["spec"]["devices"]["requests"][0]["exactly"]["nodeName"] = "node-3"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown)


def test_selectors_pin_the_decided_devices() -> None:
    exprs = {
        case: resource_claim(req, d, "ns", "c")["spec"]["devices"]["requests"][0]["exactly"]
        for case, (req, d) in CASES.items()
    }
    assert exprs["one-gpu"]["selectors"][0]["cel"]["expression"].endswith(".index == 2")
    assert exprs["four-gpus"]["count"] == 4
    assert exprs["four-gpus"]["selectors"][0]["cel"]["expression"].endswith("in [0, 1, 4, 5]")
    assert exprs["mig"]["deviceClassName"] == "mig.nvidia.com"
    assert "profile == '3g.40gb'" in exprs["mig"]["selectors"][0]["cel"]["expression"]
    assert "parentIndex == 1" in exprs["mig"]["selectors"][0]["cel"]["expression"]
    assert {e["deviceClassName"] for k, e in exprs.items() if k != "mig"} == {"gpu.nvidia.com"}


def test_sharing_config_only_for_shared_gpus() -> None:
    def sharing(case: str) -> object:
        req, d = CASES[case]
        config = resource_claim(req, d, "ns", "c")["spec"]["devices"].get("config")
        return config[0]["opaque"]["parameters"]["sharing"] if config else None

    assert sharing("one-gpu") is None and sharing("mig") is None
    assert sharing("time-sliced") == {
        "strategy": "TimeSlicing",
        "timeSlicingConfig": {"interval": "Default"},
    }
    assert sharing("mps") == {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 47}}


def test_pod_fields_bind_node_and_claim() -> None:
    _, decision = CASES["one-gpu"]
    assert pod_fields(decision, "claim-x") == {
        "nodeName": "node-3",
        "resourceClaims": [{"name": "gpu", "resourceClaimName": "claim-x"}],
    }


def test_cpu_only_request_has_no_claim() -> None:
    with pytest.raises(ValueError, match="needs no ResourceClaim"):
        resource_claim(PodRequest("cpu", 1000), Decision(0, "n"), "ns", "c")
