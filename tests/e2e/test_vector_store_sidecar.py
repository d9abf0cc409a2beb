"""A VectorStore rendered beside its embedding model's pod is accepted by the real apiserver."""

from __future__ import annotations

from collections.abc import Callable

from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod

from kapell.api import Model, VectorStore
from kapell.api.loader import load_text
from kapell.backends.kubernetes.inventory import Placement
from kapell.backends.kubernetes.pods import replica_pod, vector_store_claim, with_vector_store
from kapell.policy.placement.requests import PodRequest

SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: embed, namespace: NS}
spec:
  source: {uri: hash-ngrams-256}
  engine: {name: hashembed}
---
apiVersion: kapell.dev/v1alpha1
kind: VectorStore
metadata: {name: handbook, namespace: NS}
spec:
  embeddingModel: embed
  dimensions: 256
  storage: {type: embedded, size: 2Gi}
"""


def test_store_sidecar_and_claim_are_accepted(
    kube: Client, namespace: str, kapell_crds: str, kubectl: Callable[..., str]
) -> None:
    text = SPEC.replace("NS", namespace)
    kubectl("apply", "--server-side", "-f", "-", stdin=text)  # the CRDs accept both
    model, store = load_text(text, "spec.yaml")
    assert isinstance(model, Model) and isinstance(store, VectorStore)
    uid = kubectl("get", "model", "embed", "-n", namespace, "-o", "jsonpath={.metadata.uid}")

    placed = Placement(PodRequest("embed-r1-0", 500, 512), "gpu-node-0002")
    pod = with_vector_store(replica_pod(model, "r1", "embed-r1-0", uid, placed, None), store)
    # Not kapell's label: an operator running in this session would take the pod for an old
    # revision of the Model and delete it before it is read back.
    del pod["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    kube.create(from_dict(vector_store_claim(store)), namespace=namespace)
    kube.create(from_dict(pod), namespace=namespace)

    stored = kube.get(Pod, "embed-r1-0", namespace=namespace)
    assert stored.spec is not None
    assert [c.name for c in stored.spec.containers] == ["engine", "vs-handbook"]
    [volume] = [v for v in stored.spec.volumes or [] if v.persistentVolumeClaim is not None]
    assert volume.persistentVolumeClaim is not None
    assert volume.persistentVolumeClaim.claimName == "vs-handbook"
    claim = kube.get(PersistentVolumeClaim, "vs-handbook", namespace=namespace)
    assert claim.spec is not None and claim.spec.resources is not None
    assert claim.spec.resources.requests == {"storage": "2Gi"}
