"""The objects one Model becomes on a cluster: a Pod (and claim) per replica, one Service.

Pure rendering, no API calls: names are deterministic (``<model>-<revision>-<slot>``), every
object is labelled ``app.kubernetes.io/managed-by: kapell`` and owned by the Model, so the
garbage collector removes what a deleted Model leaves and a restarted operator finds its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kapell.api.errors import BackendError
from kapell.api.images import KAPELL_IMAGE
from kapell.api.kinds import VectorStore
from kapell.api.meta import API_VERSION
from kapell.api.model import RECIPE_ENGINES, Model
from kapell.backends.kubernetes import dra
from kapell.backends.kubernetes.inventory import PLACEMENT_ANNOTATION, Placement
from kapell.engines.adapters import LaunchContext, adapter_for
from kapell.policy.placement.inventory import Decision

ENGINE_PORT = 8000
MANAGED_BY = {"app.kubernetes.io/managed-by": "kapell"}
MODEL_LABEL = "kapell.dev/model"
REVISION_LABEL = "kapell.dev/revision"
MODEL_VOLUME_ROOT = "/models"

Manifest = dict[str, Any]


def owner_reference(model: Model, uid: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "name": model.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _weights(model: Model) -> tuple[str, list[Manifest], list[Manifest]]:
    """Where the engine finds the weights in the pod, and the volume that puts them there."""
    source = model.spec.source
    uri = source.uri or ""
    if source.scheme == "pvc":
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        mount = f"{MODEL_VOLUME_ROOT}/{claim}"
        volume = {
            "name": "weights",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        return (
            f"{mount}/{path}".rstrip("/"),
            [volume],
            [{"name": "weights", "mountPath": mount, "readOnly": True}],
        )
    if source.scheme == "s3":
        raise BackendError(
            f"model {model.metadata.name}: s3:// sources need a download step the Kubernetes "
            "backend does not have yet; copy the weights to a PersistentVolumeClaim (pvc://)"
        )
    if source.scheme == "hf" or model.spec.engine.name in RECIPE_ENGINES:
        return uri.removeprefix("hf://").removeprefix("file://").split("@", 1)[0], [], []
    path = uri.removeprefix("file://")
    if not Path(path).is_absolute():
        raise BackendError(
            f"model {model.metadata.name}: source.uri {uri!r} is relative; on a cluster give an "
            "absolute node path (file:///...), pvc://CLAIM/PATH or hf://ORG/NAME"
        )
    volume = {"name": "weights", "hostPath": {"path": path, "type": "Directory"}}
    return path, [volume], [{"name": "weights", "mountPath": path, "readOnly": True}]


def engine_command(model: Model, weights: str) -> list[str]:
    """The engine's argv in the pod: kapell's own engines run as ``python -m ...``."""
    adapter = adapter_for(model)
    if not adapter.runs_process:
        raise BackendError(
            f"model {model.metadata.name}: engine {adapter.name!r} runs no replica; the "
            "Kubernetes backend does not route to external endpoints yet"
        )
    argv = adapter.command(model, LaunchContext("0.0.0.0", ENGINE_PORT, weights))
    if argv[:2] == [argv[0], "-m"] and argv[2].startswith("kapell.engines."):
        argv[0] = "python"
    return argv


def replica_pod(
    model: Model,
    revision: str,
    name: str,
    owner_uid: str,
    placement: Placement,
    claim_name: str | None,
) -> Manifest:
    """One replica's Pod, pinned to the node placement chose, using its claim if it has one."""
    weights, volumes, mounts = _weights(model)
    adapter = adapter_for(model)
    resources = model.spec.resources
    requests = {"cpu": str(resources.cpu), "memory": str(resources.memory)}
    container: Manifest = {
        "name": "engine",
        "image": KAPELL_IMAGE,
        "command": engine_command(model, weights),
        "env": [{"name": k, "value": v} for k, v in sorted(model.spec.engine.env.items())],
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": adapter.readiness_path, "port": ENGINE_PORT},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "resources": {"requests": requests, "limits": {"memory": requests["memory"]}},
        "volumeMounts": mounts,
    }
    spec: Manifest = {
        "containers": [container],
        "volumes": volumes,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
        "nodeSelector": dict(model.spec.node_selector),
    }
    decision = Decision(-1, placement.node, placement.gpus, placement.mig)
    pinned = dra.pod_fields(decision, claim_name or "")
    spec["affinity"] = pinned["affinity"]
    if claim_name is not None:
        spec["resourceClaims"] = pinned["resourceClaims"]
        container["resources"]["claims"] = dra.CONTAINER_CLAIMS
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": model.metadata.namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: model.metadata.name, REVISION_LABEL: revision},
            "annotations": {PLACEMENT_ANNOTATION: placement.to_json()},
            "ownerReferences": [owner_reference(model, owner_uid)],
        },
        "spec": spec,
    }


def model_selector(model: Model) -> dict[str, str]:
    """The labels that select a Model's pods, for every object that routes to them."""
    return {MODEL_LABEL: model.metadata.name}


def model_service(model: Model, owner_uid: str) -> Manifest:
    """One Service per Model over its ready replicas (what an in-cluster gateway resolves)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": model.metadata.name,
            "namespace": model.metadata.namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: model.metadata.name},
            "ownerReferences": [owner_reference(model, owner_uid)],
        },
        "spec": {
            "selector": model_selector(model),
            "ports": [{"name": "http", "port": ENGINE_PORT, "targetPort": ENGINE_PORT}],
        },
    }


VECTOR_STORE_PORT = 8100
VECTOR_STORE_LABEL = "kapell.dev/vector-store"
VECTOR_DATA_ROOT = "/var/lib/kapell/vectors"


def vector_store_claim_name(store: VectorStore) -> str:
    return f"vs-{store.metadata.name}"


def vector_store_claim(store: VectorStore) -> Manifest:
    """The PersistentVolumeClaim that holds an embedded store's files.

    It has no owner: deleting the VectorStore (or the Model) must not delete the data.
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": vector_store_claim_name(store),
            "namespace": store.metadata.namespace,
            "labels": {**MANAGED_BY, VECTOR_STORE_LABEL: store.metadata.name},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(store.spec.storage.size)}},
        },
    }


def with_vector_store(pod: Manifest, store: VectorStore) -> Manifest:
    """``pod`` (a replica of the store's embedding model) with the store as a sidecar.

    The sidecar serves the store's ``/v1/vector_stores`` API on ``VECTOR_STORE_PORT`` and
    embeds through the engine container beside it (``127.0.0.1:ENGINE_PORT``); an embedded
    store keeps its files on the claim, a pgvector store keeps none and mounts nothing.
    """
    spec = store.spec
    name = store.metadata.name
    data = f"{VECTOR_DATA_ROOT}/{name}"
    container: Manifest = {
        "name": f"vs-{name}",
        "image": KAPELL_IMAGE,
        "command": [
            "python",
            "-m",
            "kapell.gateway.vectors",
            "--store",
            name,
            "--embedding-model",
            spec.embedding_model,
            "--dimensions",
            str(spec.dimensions),
            "--metric",
            spec.metric,
            "--data",
            data,
            "--embeddings-url",
            f"http://127.0.0.1:{ENGINE_PORT}",
            "--port",
            str(VECTOR_STORE_PORT),
        ],
        "ports": [{"name": "vectors", "containerPort": VECTOR_STORE_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": VECTOR_STORE_PORT},
            "periodSeconds": 2,
        },
        "volumeMounts": [],
    }
    volumes = list(pod["spec"]["volumes"])
    if spec.storage.url is not None:
        container["command"] += ["--pgvector-url", spec.storage.url]
    else:
        volume = f"vs-{name}"
        container["volumeMounts"] = [{"name": volume, "mountPath": data}]
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {"claimName": vector_store_claim_name(store)}}
        )
    labels = {**pod["metadata"]["labels"], VECTOR_STORE_LABEL: name}
    return {
        **pod,
        "metadata": {**pod["metadata"], "labels": labels},
        "spec": {**pod["spec"], "containers": [*pod["spec"]["containers"], container],
                 "volumes": volumes},
    }  # fmt: skip
