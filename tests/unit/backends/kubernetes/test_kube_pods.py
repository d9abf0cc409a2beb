"""What a Model becomes on a cluster: valid Pods and Services, and pods read back as replicas."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
from lightkube import Client, KubeConfig
from lightkube.config.kubeconfig import Cluster, User

from kapell.api.errors import BackendError
from kapell.api.images import KAPELL_IMAGE
from kapell.api.kinds import VectorStore
from kapell.api.loader import load_text
from kapell.api.model import Model
from kapell.api.replica import ReplicaPhase
from kapell.backends.kubernetes.inventory import Placement
from kapell.backends.kubernetes.pods import (
    model_service,
    replica_pod,
    vector_store_claim,
    with_vector_store,
)
from kapell.backends.kubernetes.replicas import KubeReplicas, claim_view, pod_view
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

K8S_VERSION = "1.34.0"
PLACED = Placement(PodRequest("m-abc-0", 2000, 4096, 1, GPU_MILLI), "gpu-node-0001", (3,))
READ_BACK = replace(PLACED, request=replace(PLACED.request, name=""))
"""``PLACED`` as a pod's annotation gives it back: the request of the shape, named after no pod."""


def _model(source: str, engine: str = "reference") -> Model:
    text = f"""
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {{name: m, namespace: team}}
spec:
  source: {{uri: "{source}"}}
  engine: {{name: {engine}, env: {{A: "1"}}}}
  resources: {{cpu: "2", memory: 4Gi, gpu: {{count: 1}}}}
"""
    [model] = load_text(text, "m.yaml")
    assert isinstance(model, Model)
    return model


def test_a_replica_pod_is_valid_pinned_and_owned(tmp_path: Path) -> None:
    pod = replica_pod(_model(f"file://{tmp_path}"), "abc", "m-abc-0", "uid-1", PLACED, "m-abc-0")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    spec = pod["spec"]
    [term] = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchFields"][0]["values"] == ["gpu-node-0001"]
    assert spec["resourceClaims"] == [{"name": "gpu", "resourceClaimName": "m-abc-0"}]
    [container] = spec["containers"]
    assert container["image"] == KAPELL_IMAGE
    assert container["command"][:3] == ["python", "-m", "kapell.engines.reference"]
    assert container["command"][container["command"].index("--model") + 1] == str(tmp_path)
    assert container["resources"]["claims"] == [{"name": "gpu"}]
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Model", "uid-1", True)
    assert Placement.from_json(pod["metadata"]["annotations"]["kapell.dev/placement"]) == READ_BACK


def test_pvc_sources_are_mounted_and_relative_or_s3_sources_are_refused() -> None:
    pod = replica_pod(_model("pvc://weights/llama/8b"), "abc", "m-abc-0", "u", PLACED, None)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    command = pod["spec"]["containers"][0]["command"]
    assert command[command.index("--model") + 1] == "/models/weights/llama/8b"
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "weights"
    with pytest.raises(BackendError, match="relative"):
        replica_pod(_model("models/tiny"), "abc", "m-abc-0", "u", PLACED, None)
    with pytest.raises(BackendError, match="s3://"):
        replica_pod(_model("s3://bucket/tiny"), "abc", "m-abc-0", "u", PLACED, None)


def test_the_service_selects_the_models_pods() -> None:
    service = model_service(_model("h100-llama3-8b", "sim"), "uid-1")
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    assert service["spec"]["selector"] == {"kapell.dev/model": "m"}


def _pod(**status: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "m-abc-0",
            "namespace": "team",
            "uid": "u",
            "labels": {"kapell.dev/model": "m", "kapell.dev/revision": "abc"},
            "annotations": {"kapell.dev/placement": PLACED.to_json()},
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": status,
    }


def test_pod_states_read_as_replica_phases() -> None:
    ready = pod_view(_pod(
        podIP="10.244.0.5",
        conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:12Z"}],
    ))  # fmt: skip
    assert ready.phase is ReplicaPhase.READY and ready.ready_at == ready.created + 12
    assert ready.replica().url == "http://10.244.0.5:8000"
    assert ready.replica().id == "team/m-abc-0" and ready.model_key == "Model/team/m"
    crashing = pod_view(_pod(containerStatuses=[{
        "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "exit 1"}},
    }]))  # fmt: skip
    assert crashing.phase is ReplicaPhase.BACKOFF and crashing.restarts == 3
    pending = pod_view(_pod(conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no GPU",
    }]))  # fmt: skip
    assert pending.phase is ReplicaPhase.STARTING and "no GPU" in pending.message
    assert pending.placement == READ_BACK


def test_a_claim_view_keeps_the_devices_only_of_claims_kapell_did_not_make() -> None:
    def claim(managed_by: str) -> dict[str, object]:
        return {
            "metadata": {
                "name": "m-abc-0", "namespace": "team",
                "labels": {"app.kubernetes.io/managed-by": managed_by},
                "ownerReferences": [{"kind": "Pod", "name": "m-abc-0", "uid": "u"}],
            },
            "status": {"allocation": {"devices": {"results": [
                {"driver": "gpu.nvidia.com", "pool": "gpu-node-0001", "device": "gpu-3"},
                {"driver": "other.example.com", "pool": "gpu-node-0001", "device": "nic-0"},
            ]}}},
        }  # fmt: skip

    foreign = claim_view(claim("someone-else"))
    assert not foreign.managed and foreign.allocated == (("gpu-node-0001", "gpu-3"),)
    own = claim_view(claim("kapell"))
    assert own.managed and own.allocated == () and own.owners == ("m-abc-0",)
    assert own.owners[0] is own.name  # one string for a whole GPU's claim and its one owner


def _store(storage: str) -> VectorStore:
    text = f"""
apiVersion: kapell.dev/v1alpha1
kind: VectorStore
metadata: {{name: docs, namespace: team}}
spec: {{embeddingModel: m, dimensions: 256, storage: {storage}}}
"""
    [store] = load_text(text, "vs.yaml")
    assert isinstance(store, VectorStore)
    return store


def test_a_vector_store_is_a_sidecar_with_a_claim() -> None:
    model = _model("hash-ngrams-256", engine="hashembed")
    store = _store("{size: 5Gi}")
    pod = with_vector_store(replica_pod(model, "abc", "m-abc-0", "u", PLACED, None), store)
    claim = vector_store_claim(store)
    for manifest in (pod, claim):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    engine, sidecar = pod["spec"]["containers"]
    assert engine["command"][:3] == ["python", "-m", "kapell.engines.hashembed"]
    assert sidecar["command"][:3] == ["python", "-m", "kapell.gateway.vectors"]
    assert "http://127.0.0.1:8000" in sidecar["command"]
    assert pod["spec"]["volumes"] == [
        {"name": "vs-docs", "persistentVolumeClaim": {"claimName": "vs-docs"}}
    ]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "ownerReferences" not in claim["metadata"]  # the data outlives the resources


def test_a_pgvector_store_mounts_nothing() -> None:
    store = _store("{type: pgvector, url: 'postgresql://kapell@db:5432/vectors'}")
    model = _model("hash-ngrams-256", engine="hashembed")
    pod = with_vector_store(replica_pod(model, "abc", "m-abc-0", "u", PLACED, None), store)
    sidecar = pod["spec"]["containers"][1]
    assert sidecar["volumeMounts"] == [] and pod["spec"]["volumes"] == []
    assert sidecar["command"][-2:] == ["--pgvector-url", "postgresql://kapell@db:5432/vectors"]


def test_a_deleted_shared_claim_is_forgotten_once_none_of_its_pods_is_left() -> None:
    """The operator remembers a shared claim's pods between writes; that memory must not outlive
    the claim (it grew with every shared claim ever made), nor be dropped while a pod that will
    write the claim anew is still there."""
    config = KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:9"), user=User())
    client = Client(config)  # never contacted
    replicas = KubeReplicas(client, stored=lambda key: None, on_change=lambda key: None)
    claim = ("team", "gpu-node-0001-gpu-3-shared")
    replicas._sharers[claim] = {"m-abc-0": ("u", 500)}
    replicas.pods._put(("team", "m-abc-0"), pod_view(_pod()))
    replicas._claim_changed(claim, None)
    assert claim in replicas._sharers
    replicas.pods._put(("team", "m-abc-0"), None)
    replicas._claim_changed(claim, None)
    assert claim not in replicas._sharers
    replicas.close()
