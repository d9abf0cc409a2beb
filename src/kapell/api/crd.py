"""CustomResourceDefinitions generated from the pydantic models, the single source of truth.

Kubernetes wants *structural* schemas: every node typed, no ``$ref``, no ``nullable``, no
``const``, no ``additionalProperties: false`` beside ``properties``. Pydantic's JSON schema
is turned into that shape here, so the CRDs never drift from what ``kapell validate`` accepts.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML

from kapell.api.meta import API_GROUP, Resource

_DROP = {"title", "examples", "additionalProperties_false"}
_PLURALS = {
    "Model": "models",
    "TrainingJob": "trainingjobs",
    "Prompt": "prompts",
    "VectorStore": "vectorstores",
    "GPUPool": "gpupools",
    "Tenant": "tenants",
    "Budget": "budgets",
}
_SHORT = {
    "Model": ["km"],
    "TrainingJob": ["ktj"],
    "Prompt": ["kp"],
    "VectorStore": ["kvs"],
    "GPUPool": ["kgp"],
    "Tenant": ["ktn"],
    "Budget": ["kb"],
}


def structural_schema(model: type[Resource]) -> dict[str, Any]:
    """The openAPIV3Schema of one kind, structural and self-contained."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    schema["required"] = ["spec"]
    return schema


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                rest.pop("default")
            return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "examples") or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", _json_type(value))
            continue
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 puts the bound here; OpenAPI v3.0 wants a flag beside the bound.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _structural(value, defs)
    if "properties" in out:
        out["type"] = "object"
    return out


def _json_type(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), "string"
    )


def plural_of(kind: str) -> str:
    """The resource name of a kind in its CRD (``TrainingJob`` -> ``trainingjobs``)."""
    return _PLURALS[kind]


def crd(model: type[Resource]) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CRD of one kind."""
    kind = model.model_fields["kind"].default
    plural = _PLURALS[kind]
    version: dict[str, Any] = {
        "name": "v1alpha1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": structural_schema(model)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    }
    if kind == "Model":
        version["additionalPrinterColumns"][1:1] = [
            {"name": "Engine", "type": "string", "jsonPath": ".spec.engine.name"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
        ]
    if kind == "Tenant":  # no controller writes its status: show what it allows instead
        version["additionalPrinterColumns"][0:1] = [
            {"name": "Models", "type": "string", "jsonPath": ".spec.models"},
            {"name": "RPM", "type": "integer", "jsonPath": ".spec.requestsPerMinute"},
            {"name": "TPM", "type": "integer", "jsonPath": ".spec.tokensPerMinute"},
        ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": _SHORT[kind],
                "categories": ["kapell"],
            },
            "versions": [version],
        },
    }


def crd_documents() -> str:
    """Every kind's CRD as one multi-document YAML text."""
    from kapell.api import KINDS

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump_all([crd(model) for model in KINDS.values()], buffer)
    return buffer.getvalue()
