"""Gateway API Inference Extension interop: the real apiserver, with the upstream CRDs from
../shared/data/crds installed, accepts the InferencePool and InferenceObjective the operator
renders for a Model, which follow the Model's priority and go with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubeobjects import eventually
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Service
from operators import OperatorProcess, apply, model, pods_of, wait_ready

from kapell.backends.kubernetes.replicas import InferenceObjective, InferencePool
from kapell.backends.kubernetes.store import ModelResource

POOL_WAIT_S = 90.0  # an operator started before the CRDs looks for them again within a minute


def _get(kube: Client, resource: Any, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = kube.get(resource, name, namespace=namespace).to_dict()
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return found


def test_a_model_gets_an_inference_pool_and_objective_the_apiserver_accepts(
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
    ecosystem_crds: list[str],
    operator: OperatorProcess,
) -> None:
    assert (
        "customresourcedefinition.apiextensions.k8s.io/inferencepools.inference.networking.k8s.io"
        in ecosystem_crds
    )
    manifest = model("pooled", namespace, replicas=2)
    manifest["spec"]["priority"] = 7
    apply(kubectl, manifest)
    wait_ready(kube, "pooled", namespace, replicas=2)
    uid = kube.get(ModelResource, "pooled", namespace=namespace).to_dict()["metadata"]["uid"]

    pool = eventually(
        lambda: _get(kube, InferencePool, "pooled", namespace), "InferencePool pooled", POOL_WAIT_S
    )
    assert pool["spec"]["selector"]["matchLabels"] == {"kapell.dev/model": "pooled"}
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["appProtocol"] == "http"  # the CRD's default: the apiserver applied it
    [owner] = pool["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Model", uid)
    # The pool selects exactly the Model's pods, as the Service does.
    service = kube.get(Service, "pooled", namespace=namespace).to_dict()
    assert service["spec"]["selector"] == pool["spec"]["selector"]["matchLabels"]
    selected = kubectl(
        "get", "pods", "-n", namespace, "-o", "name", "-l", "kapell.dev/model=pooled"
    )
    assert sorted(selected.split()) == sorted(
        f"pod/{p['metadata']['name']}" for p in pods_of(kube, namespace, "pooled")
    )

    objective = eventually(
        lambda: _get(kube, InferenceObjective, "pooled", namespace), "InferenceObjective pooled"
    )
    assert objective["spec"]["priority"] == 7
    assert objective["spec"]["poolRef"]["name"] == "pooled"

    # A new priority reaches the objective and rolls no replica.
    before = sorted(p["metadata"]["name"] for p in pods_of(kube, namespace, "pooled"))
    kubectl(
        "patch",
        "model",
        "pooled",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"priority":-3}}',
    )

    def reprioritised() -> dict[str, Any] | None:
        found = _get(kube, InferenceObjective, "pooled", namespace)
        return found if found and found["spec"]["priority"] == -3 else None

    eventually(reprioritised, "InferenceObjective pooled at priority -3")
    assert sorted(p["metadata"]["name"] for p in pods_of(kube, namespace, "pooled")) == before

    # Deleting the Model removes both before its finalizer goes.
    kubectl("delete", "model", "pooled", "-n", namespace, "--wait=true", "--timeout=90s")
    assert _get(kube, InferencePool, "pooled", namespace) is None
    assert _get(kube, InferenceObjective, "pooled", namespace) is None


def test_the_apiserver_refuses_what_the_crds_forbid(
    kubectl: Callable[..., str], namespace: str, ecosystem_crds: list[str]
) -> None:
    """The CRDs' schemas are enforced here, so acceptance above is a real check."""
    bad = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 70000}]},
    }
    with pytest.raises(AssertionError, match="targetPorts"):
        apply(kubectl, bad)
