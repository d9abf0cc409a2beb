"""A Model's InferencePool and InferenceObjective: valid for the upstream CRDs' schemas, and
selecting exactly the pods the operator renders for that Model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from kapell.api.errors import SpecError
from kapell.api.loader import load_text
from kapell.api.model import Model
from kapell.backends.kubernetes.inferencepool import (
    OBJECTIVE,
    POOL,
    Kind,
    inference_objective,
    inference_pool,
)
from kapell.backends.kubernetes.inventory import Placement
from kapell.backends.kubernetes.pods import replica_pod
from kapell.policy.placement.requests import PodRequest

CRDS = Path(__file__).resolve().parents[4] / "../shared/data/crds/gateway-api-inference-extension"


def _model(name: str = "chat", priority: int | None = None) -> Model:
    extra = "" if priority is None else f"\n  priority: {priority}"
    text = f"""
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {{name: {name}, namespace: team}}
spec:
  source: {{uri: h100-llama3-8b}}
  engine: {{name: sim}}{extra}
"""
    [model] = load_text(text, "m.yaml")
    assert isinstance(model, Model)
    return model


def _schema(kind: Kind) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind``'s served version in the upstream CRD file."""
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} is absent")
    path = CRDS / f"{kind.group}_{kind.plural}.yaml"
    crd = YAML(typ="safe").load(path.read_text())
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (kind.group, kind.kind)
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == kind.version]
    assert version["served"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_pool_selects_the_models_pods_on_the_engine_port() -> None:
    chat, other = _model("chat"), _model("chat-2")
    pool = inference_pool(chat, "uid-1")
    jsonschema.validate(pool, _schema(POOL))
    placed = Placement(PodRequest("x", 100, 128), "node-0", ())
    pod = replica_pod(chat, "abc", "chat-abc-0", "uid-1", placed, None)
    neighbour = replica_pod(other, "abc", "chat-2-abc-0", "uid-2", placed, None)
    selector = pool["spec"]["selector"]["matchLabels"]
    assert _matches(selector, pod["metadata"]["labels"])
    assert not _matches(selector, neighbour["metadata"]["labels"])
    [port] = pod["spec"]["containers"][0]["ports"]
    assert pool["spec"]["targetPorts"] == [{"number": port["containerPort"]}]


def test_the_objective_carries_the_priority_and_names_the_pool() -> None:
    model = _model(priority=-5)
    objective = inference_objective(model, "uid-1")
    jsonschema.validate(objective, _schema(OBJECTIVE))
    assert objective["spec"]["priority"] == -5
    pool = inference_pool(model, "uid-1")
    ref = objective["spec"]["poolRef"]
    assert (ref["group"], ref["kind"], ref["name"]) == (
        pool["apiVersion"].split("/")[0],
        pool["kind"],
        pool["metadata"]["name"],
    )


def test_priority_defaults_to_the_pickers_unset_value() -> None:
    assert inference_objective(_model(), "u")["spec"]["priority"] == 0


@pytest.mark.parametrize("render", [inference_pool, inference_objective])
def test_both_are_owned_by_the_model_in_its_namespace(render: Any) -> None:
    manifest = render(_model(), "uid-7")
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("chat", "team")
    [owner] = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Model",
        "chat",
        "uid-7",
        True,
    )
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "kapell"


def test_the_schema_check_can_fail() -> None:
    """The upstream schema refuses a pool without ports, so the checks above mean something."""
    pool = inference_pool(_model(), "u")
    del pool["spec"]["targetPorts"]
    with pytest.raises(jsonschema.ValidationError, match="targetPorts"):
        jsonschema.validate(pool, _schema(POOL))


def test_priority_out_of_range_is_a_located_error() -> None:
    with pytest.raises(SpecError, match=r"m\.yaml:\d+: spec\.priority"):
        _model(priority=5000)
