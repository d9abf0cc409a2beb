"""`kapell crds`: every kind's CRD is a valid apiextensions.k8s.io/v1 object with a structural schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from kapell.api import KINDS
from kapell.api.crd import crd, crd_documents


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{i}]"))
    return found


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_validates_against_the_kubernetes_schema(kind: str) -> None:
    obj = crd(KINDS[kind])
    kubernetes_validate.validate(obj, "1.34.0", strict=True)


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_is_structural(kind: str) -> None:
    schema = crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "nullable" not in node and "const" not in node, path
        if "properties" in node:
            assert node.get("type") == "object", path
            assert node.get("additionalProperties") is not False, path
        parent_is_properties = path.rsplit(".", 1)[-1] == "properties"
        if parent_is_properties:
            for name, sub in node.items():
                assert "type" in sub or sub.get("x-kubernetes-int-or-string"), f"{path}.{name}"


def test_crd_documents_round_trip_as_yaml() -> None:
    docs = list(YAML(typ="safe", pure=True).load_all(crd_documents()))
    assert [d["spec"]["names"]["kind"] for d in docs] == list(KINDS)
    model = docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    scaling = model["properties"]["spec"]["properties"]["scaling"]["properties"]
    assert scaling["minReplicas"]["minimum"] == 0
