"""A Model as the Gateway API Inference Extension sees it: an InferencePool and its objective.

Users who run a standard Gateway with an endpoint picker (llm-d, GKE, Istio, kgateway, Envoy
Gateway) route an HTTPRoute to the ``InferencePool``, which selects the Model's ready pods on
the engine's port; the ``InferenceObjective`` carries the Model's ``spec.priority`` for the
picker's flow control. Pure rendering, owned by the Model like its Service.
"""

from __future__ import annotations

from dataclasses import dataclass

from kapell.api.model import Model
from kapell.backends.kubernetes.pods import (
    ENGINE_PORT,
    MANAGED_BY,
    MODEL_LABEL,
    Manifest,
    model_selector,
    owner_reference,
)

POOL_GROUP = "inference.networking.k8s.io"
POOL_VERSION = "v1"
OBJECTIVE_GROUP = "inference.networking.x-k8s.io"
OBJECTIVE_VERSION = "v1alpha2"


@dataclass(frozen=True)
class Kind:
    """One Inference Extension kind: what the operator applies and the CRD that must exist."""

    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


POOL = Kind(POOL_GROUP, POOL_VERSION, "InferencePool", "inferencepools")
OBJECTIVE = Kind(OBJECTIVE_GROUP, OBJECTIVE_VERSION, "InferenceObjective", "inferenceobjectives")


def _metadata(model: Model, owner_uid: str) -> Manifest:
    return {
        "name": model.metadata.name,
        "namespace": model.metadata.namespace,
        "labels": {**MANAGED_BY, MODEL_LABEL: model.metadata.name},
        "ownerReferences": [owner_reference(model, owner_uid)],
    }


def inference_pool(model: Model, owner_uid: str) -> Manifest:
    """The pool of the Model's pods (the Service's selector) on the engine's port."""
    return {
        "apiVersion": POOL.api_version,
        "kind": POOL.kind,
        "metadata": _metadata(model, owner_uid),
        "spec": {
            "selector": {"matchLabels": model_selector(model)},
            "targetPorts": [{"number": ENGINE_PORT}],
        },
    }


def inference_objective(model: Model, owner_uid: str) -> Manifest:
    """The Model's priority, for requests routed through its pool (same name as the pool)."""
    return {
        "apiVersion": OBJECTIVE.api_version,
        "kind": OBJECTIVE.kind,
        "metadata": _metadata(model, owner_uid),
        "spec": {
            "priority": model.spec.priority,
            "poolRef": {"group": POOL.group, "kind": POOL.kind, "name": model.metadata.name},
        },
    }
