"""``kapell operator`` on the real control plane: placement, cleanup, leadership and chaos."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubeobjects import eventually
from lightkube import Client
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Service
from lightkube.resources.resource_v1 import ResourceSlice
from operators import (
    LEASE_S,
    OperatorProcess,
    apply,
    claims_in,
    condition,
    model,
    node_ready,
    pods_of,
    status,
    wait_ready,
)

from kapell.backends.kubernetes.inventory import Placement, devices_of
from kapell.backends.kubernetes.store import ModelResource
from kapell.devcluster import DevCluster
from kapell.devcluster.gpus import GpuPool, node_manifest, node_name, resource_slice

AUTO_NODE_INDEX = 90
"""A node the sizing test adds and removes (the session's cluster has nodes 0-5)."""


def _expected_devices(kube: Client, placement: Placement) -> set[str]:
    """The published devices a placement names: its GPUs, or its MIG instance on its GPU."""
    devices = [
        d
        for s in kube.list(ResourceSlice)
        if s.spec.nodeName == placement.node
        for d in devices_of(s.to_dict()["spec"])
    ]
    return {d.name for d in devices if d.gpu in placement.gpus and d.mig == placement.mig}


def _claim_of(pod: dict[str, Any]) -> str:
    [claim] = pod["spec"]["resourceClaims"]
    return str(claim["resourceClaimName"])


def test_gpu_models_are_placed_where_kapell_decided(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    apply(
        kubectl,
        model("whole", namespace, {"count": 2}),
        model("slice", namespace, {"migProfile": "1g.10gb"}),
    )
    apply(kubectl, model("share-a", namespace, {"milli": 300}))
    wait_ready(kube, "share-a", namespace)
    apply(kubectl, model("share-b", namespace, {"milli": 500}))
    for name in ("whole", "slice", "share-b"):
        wait_ready(kube, name, namespace)

    claims = {c["metadata"]["name"]: c for c in claims_in(kube, namespace)}
    for pod in pods_of(kube, namespace):
        placement = Placement.from_json(pod["metadata"]["annotations"]["kapell.dev/placement"])
        assert pod["spec"]["nodeName"] == placement.node
        results = claims[_claim_of(pod)]["status"]["allocation"]["devices"]["results"]
        assert {r["pool"] for r in results} == {placement.node}
        assert {r["device"] for r in results} == _expected_devices(kube, placement), pod[
            "metadata"
        ]["name"]

    [a], [b] = pods_of(kube, namespace, "share-a"), pods_of(kube, namespace, "share-b")
    assert _claim_of(a) == _claim_of(b), "two shares that fit one GPU were not packed onto it"
    shared = claims[_claim_of(a)]
    owners = {o["name"] for o in shared["metadata"]["ownerReferences"]}
    assert owners == {a["metadata"]["name"], b["metadata"]["name"]}
    assert '"share-a-' in shared["metadata"]["annotations"]["kapell.dev/shares"]
    assert status(kube, "whole", namespace)["observedGeneration"] == 1


def test_an_auto_model_runs_on_the_slice_the_sizing_policy_picks_among_those_published(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    """Before any demand the sizing policy picks the smallest size that meets the SLO for short
    prompts; the cluster's 1g.10gb instances cannot hold the 8B model, so it takes a 3g.40gb
    instance of a node that publishes them (added here), and the claim allocates one."""
    pool = GpuPool.parse("h100:1:3g.40gb")
    node, slice_ = node_manifest(AUTO_NODE_INDEX, pool), resource_slice(AUTO_NODE_INDEX, pool)
    apply(kubectl, node, slice_)
    try:
        eventually(
            lambda: True if node_ready(kubectl, node_name(AUTO_NODE_INDEX)) else None,
            "the 3g.40gb node Ready",
        )
        apply(kubectl, model("sized", namespace, {"auto": True}))
        wait_ready(kube, "sized", namespace)
        found = status(kube, "sized", namespace)
        assert found["replicaSize"] == "3g.40gb", found
        assert condition(kube, "sized", namespace, "Sized")["reason"] == "SizingPolicy"
        [pod] = pods_of(kube, namespace, "sized")
        placement = Placement.from_json(pod["metadata"]["annotations"]["kapell.dev/placement"])
        assert placement.node == node_name(AUTO_NODE_INDEX) and placement.mig is not None
        assert placement.mig.profile == "3g.40gb"
        claims = {c["metadata"]["name"]: c for c in claims_in(kube, namespace)}
        results = claims[_claim_of(pod)]["status"]["allocation"]["devices"]["results"]
        assert {r["device"] for r in results} == _expected_devices(kube, placement)
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [slice_, node]}
        ))  # fmt: skip


def test_a_model_that_fits_nowhere_is_unschedulable_and_nothing_is_created(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    apply(kubectl, model("huge", namespace, {"count": 9}))

    def unschedulable() -> dict[str, Any] | None:
        ready = condition(kube, "huge", namespace, "Ready")
        return ready if ready.get("reason") == "Unschedulable" else None

    ready = eventually(unschedulable, "Ready=False reason Unschedulable")
    assert ready["status"] == "False" and "9 free whole GPU(s) on one node" in ready["message"]
    time.sleep(3)  # several resyncs: still nothing made, operator still up
    assert pods_of(kube, namespace) == [] and claims_in(kube, namespace) == []
    assert operator.proc is not None and operator.proc.poll() is None


def test_deleting_a_model_removes_pods_claims_and_service(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    apply(kubectl, model("gone", namespace, {"count": 1}, replicas=2))
    wait_ready(kube, "gone", namespace, replicas=2)
    assert len(claims_in(kube, namespace)) == 2
    kubectl("delete", "models.kapell.dev", "gone", "-n", namespace, "--wait=true", "--timeout=60s")
    assert pods_of(kube, namespace) == []
    eventually(lambda: True if not claims_in(kube, namespace) else None, "claims collected")
    assert not list(kube.list(Service, namespace=namespace, labels={"kapell.dev/model": "gone"}))


def test_a_scaling_change_adds_replicas_without_replacing_any(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    apply(kubectl, model("grow", namespace))
    wait_ready(kube, "grow", namespace)
    [first] = [p["metadata"]["name"] for p in pods_of(kube, namespace)]
    apply(kubectl, model("grow", namespace, replicas=3))
    wait_ready(kube, "grow", namespace, replicas=3)
    assert first in {p["metadata"]["name"] for p in pods_of(kube, namespace)}


def _converged(kube: Client, namespace: str, desired: dict[str, int]) -> str | None:
    """None when pods and claims are exactly what ``desired`` implies, else what differs."""
    pods = [p for p in pods_of(kube, namespace) if not p["metadata"].get("deletionTimestamp")]
    by_model: dict[str, int] = {}
    for pod in pods:
        by_model[pod["metadata"]["labels"]["kapell.dev/model"]] = (
            by_model.get(pod["metadata"]["labels"]["kapell.dev/model"], 0) + 1
        )
    wanted = {name: n for name, n in desired.items() if n}
    if by_model != wanted:
        return f"pods per model {by_model} != desired {wanted}"
    names = {p["metadata"]["name"] for p in pods}
    for claim in claims_in(kube, namespace):
        owners = {o["name"] for o in claim["metadata"].get("ownerReferences") or []}
        if not owners & names:
            return f"orphan claim {claim['metadata']['name']}"
    for pod in pods:
        if pod["spec"].get("resourceClaims") and _claim_of(pod) not in {
            c["metadata"]["name"] for c in claims_in(kube, namespace)
        }:
            return f"pod {pod['metadata']['name']} has no claim"
    return None


def test_sigkilled_at_random_the_operator_converges_with_no_orphan_or_duplicate(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    rng = random.Random(11)
    desired: dict[str, int] = {}

    def spec(name: str, replicas: int) -> dict[str, Any]:
        gpu = {"milli": 100} if int(name.split("-")[1]) % 5 == 0 else None
        manifest = model(name, namespace, gpu, replicas=replicas)
        manifest["spec"]["scaling"]["autoscaler"] = "static"
        return manifest

    for i in range(50):
        desired[f"m-{i}"] = rng.randint(1, 3)
    apply(kubectl, *(spec(n, r) for n, r in desired.items()))
    next_id = 50
    for _ in range(10):
        live = [n for n, r in desired.items() if r]
        for name in rng.sample(live, 10):
            desired[name] = rng.randint(1, 3)
        apply(kubectl, *(spec(n, desired[n]) for n in live if desired[n]))
        for name in rng.sample(live, 3):
            kubectl("delete", "models.kapell.dev", name, "-n", namespace, "--wait=false")
            desired[name] = 0
        for _ in range(3):
            desired[f"m-{next_id}"] = rng.randint(1, 3)
            apply(kubectl, spec(f"m-{next_id}", desired[f"m-{next_id}"]))
            next_id += 1
        time.sleep(rng.uniform(0.0, 2.0))
        operator.kill(signal.SIGKILL)
        operator.start()
    operator.wait_watching(timeout_s=120)
    eventually(lambda: None if _converged(kube, namespace, desired) else True, "convergence", 240)
    # Stable, not just passing through: the same answer a few resyncs later.
    time.sleep(5)
    assert _converged(kube, namespace, desired) is None
    remaining = {m["metadata"]["name"] for m in kube.list(ModelResource, namespace=namespace)}
    assert remaining == {n for n, r in desired.items() if r}


def test_only_the_lease_holder_acts_and_a_standby_takes_over(
    operator: OperatorProcess,
    dev_cluster: DevCluster,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
    tmp_path: Path,
) -> None:
    standby = OperatorProcess(
        dev_cluster.kubeconfig, tmp_path / "standby.log", "op-standby"
    ).start()
    try:
        apply(kubectl, model("first", namespace))
        wait_ready(kube, "first", namespace)
        time.sleep(2 * LEASE_S)
        assert "leading" not in standby.text(), "a second operator acted while the first led"
        lease = kube.get(Lease, "kapell-operator", namespace="kube-system")
        assert lease.spec is not None and lease.spec.holderIdentity == operator.identity

        operator.kill(signal.SIGKILL)
        standby.wait_watching(timeout_s=4 * LEASE_S + 30)
        apply(kubectl, model("second", namespace))
        wait_ready(kube, "second", namespace)
        seen = len(operator.text())
        operator.start()  # back as a candidate; it must wait while the standby leads
        time.sleep(2 * LEASE_S)
        assert "watching" not in operator.text()[seen:], "two operators led at once"
    finally:
        standby.kill(signal.SIGTERM)  # gives the Lease up: the module's operator leads again
    operator.wait_watching(timeout_s=60)


def test_the_operator_resumes_its_watches_after_an_apiserver_restart(
    operator: OperatorProcess,
    dev_cluster: DevCluster,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
) -> None:
    apply(kubectl, model("before", namespace))
    wait_ready(kube, "before", namespace)
    dev_cluster.processes.restart("kube-apiserver")
    eventually(lambda: True if _apiserver_answers(kubectl) else None, "apiserver back", 120)
    apply(kubectl, model("after", namespace))
    wait_ready(kube, "after", namespace)
    assert operator.proc is not None and operator.proc.poll() is None
    assert len(pods_of(kube, namespace, "before")) == 1


def _apiserver_answers(kubectl: Callable[..., str]) -> bool:
    try:
        return "ok" in kubectl("get", "--raw", "/readyz")
    except AssertionError:
        return False
