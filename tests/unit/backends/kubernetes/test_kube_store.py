"""The operator's copy of a custom resource: kept as JSON, parsed on use."""

from __future__ import annotations

import copy
from typing import Any

from kapell.api.model import Model
from kapell.backends.kubernetes.store import parse_model

RAW: dict[str, Any] = {
    "apiVersion": "kapell.dev/v1alpha1",
    "kind": "Model",
    "metadata": {
        "name": "chat",
        "namespace": "team-a",
        "uid": "u-1",
        "generation": 3,
        "resourceVersion": "42",
        "managedFields": [{"manager": "kubectl"}],
        "finalizers": ["kapell.dev/replicas"],
    },
    "spec": {
        "source": {"uri": "h100-llama3-8b"},
        "engine": {"name": "sim"},
        "resources": {"gpu": {"count": 1}},
        "scaling": {"minReplicas": 2, "maxReplicas": 4},
    },
    "status": {"replicas": 2, "readyReplicas": 1, "observedGeneration": 2},
}


def test_a_stored_model_parses_to_what_the_body_says() -> None:
    stored = parse_model(RAW)
    model = stored.resource
    assert isinstance(model, Model)
    assert (model.metadata.namespace, model.metadata.name) == ("team-a", "chat")
    assert (model.spec.scaling.min_replicas, model.status.ready_replicas) == (2, 1)
    assert (stored.uid, stored.generation, stored.observed_generation) == ("u-1", 3, 2)
    assert stored.finalizers == ("kapell.dev/replicas",)
    assert b"managedFields" not in stored.body  # the server's bookkeeping is not kept
    assert stored.error == ""


def test_a_model_kapell_refuses_keeps_no_body_and_says_why() -> None:
    raw = copy.deepcopy(RAW)
    raw["spec"]["scaling"]["minReplicas"] = -1
    stored = parse_model(raw)
    assert stored.resource is None
    assert stored.body == b""
    assert "min_replicas" in stored.error or "minReplicas" in stored.error


def test_each_read_of_a_changed_object_sees_the_change() -> None:
    raw = copy.deepcopy(RAW)
    first = parse_model(raw)
    raw["spec"]["scaling"]["maxReplicas"] = 8
    second = parse_model(raw)
    first_model, second_model = first.resource, second.resource
    assert first_model is not None and second_model is not None
    assert (first_model.spec.scaling.max_replicas, second_model.spec.scaling.max_replicas) == (4, 8)
