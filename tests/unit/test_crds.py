"""`kapell crds`: valid apiextensions.k8s.io/v1 objects, structural schemas, CEL rules that agree
with the pydantic validators they mirror (evaluated offline with cel-python)."""

from __future__ import annotations

import copy
import functools
from typing import Any, get_args

import celpy
import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML

from kapell.api import KINDS, Model
from kapell.api.cel import rules_of, rules_of_validator
from kapell.api.crd import crd, crd_documents
from kapell.api.model import (
    MIG_PROFILES,
    EngineName,
    GPURequest,
    ModelSource,
    ModelSpec,
    ScalingSpec,
    SLOSpec,
)
from kapell.api.prompt import PromptRollout


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


def test_every_kind_has_the_status_subresource_and_printer_columns() -> None:
    for kind, model in KINDS.items():
        version = crd(model)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}, kind
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        first = ["Models", "RPM", "TPM"] if kind == "Tenant" else ["Ready"]
        assert columns[: len(first)] == first and columns[-1] == "Age", kind
    model_columns = crd(KINDS["Model"])["spec"]["versions"][0]["additionalPrinterColumns"]
    by_name = {c["name"]: c for c in model_columns}
    assert list(by_name) == ["Ready", "Engine", "Replicas", "Age"]
    assert by_name["Replicas"]["jsonPath"] == ".status.readyReplicas"
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


# --- CEL rules (x-kubernetes-validations), evaluated offline with cel-python -------------------


def _model_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd(Model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _node(path: str) -> dict[str, Any]:
    """The schema of a dotted field path under the Model, e.g. ``spec.resources.gpu``."""
    node = _model_schema()
    for name in path.split("."):
        node = node["properties"][name]
    return node


def _defaulted(schema: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the schema's defaults filled in, as the apiserver does before validating:
    an absent field with a default gets it; a present object is defaulted in turn."""
    out = copy.deepcopy(obj)
    for name, sub in schema.get("properties", {}).items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if isinstance(out.get(name), dict) and "properties" in sub:
            out[name] = _defaulted(sub, out[name])
    return out


_CEL = celpy.Environment()  # once, at import: it raises the recursion limit, which hypothesis minds


@functools.cache
def _program(expression: str) -> Any:
    return _CEL.program(_CEL.compile(expression))


def _cel(expression: str, obj: dict[str, Any]) -> Any:
    return _program(expression).evaluate({"self": celpy.json_to_cel(obj)})


def _verdict(path: str, obj: dict[str, Any]) -> tuple[bool, list[str]]:
    """(every rule at ``path`` holds, messages of the broken ones) for the raw object ``obj``."""
    node = _node(path)
    self_ = _defaulted(node, obj)
    broken = []
    for rule in node["x-kubernetes-validations"]:
        if not _cel(rule["rule"], self_):
            broken.append(rule["message"])
    return not broken, broken


def _pydantic(model: type[BaseModel], obj: dict[str, Any]) -> tuple[bool, str]:
    try:
        model.model_validate(obj)
    except ValidationError as err:
        return False, str(err)
    return True, ""


def test_the_rules_sit_on_the_objects_they_check() -> None:
    rules = {path: _node(path)["x-kubernetes-validations"] for path in RULE_PATHS}
    assert [r["rule"] for r in rules["spec.scaling"]] == ["self.minReplicas <= self.maxReplicas"]
    assert rules["spec.scaling"][0]["fieldPath"] == ".minReplicas"
    assert "migProfile" in rules["spec.resources.gpu"][0]["rule"]
    assert "self.source.url" in rules["spec"][0]["rule"]
    assert rules["spec.source"][0]["rule"] == "has(self.uri) != has(self.url)"
    assert _node("spec.resources.gpu.migProfile")["enum"] == list(MIG_PROFILES)


RULE_PATHS = ("spec", "spec.source", "spec.resources.gpu", "spec.scaling")

# Validators that have no CEL twin, and why. A new validator must get a rule or a line here.
PYDANTIC_ONLY = {
    "ModelSource._known_scheme": "URI syntax per scheme: checked by kapell, stored as a string",
    "GPURequest._known_profile": "said by the schema's enum on migProfile",
    "CheckpointSpec._known_scheme": "URI syntax: checked by kapell, stored as a string",
    "PromptRollout._steps_increase": "comparing neighbours needs indexing by a variable, "
    "which CEL lacks; checked by kapell on apply",
    "PromptSpec._variables_match_template": "placeholders are found by a regular expression",
    "PromptSpec._retrieval_fills_a_template_variable": "placeholders are found by a regular expression",
    "Resources._auto_shorthand": "a local-file shorthand (gpu: auto); the CRD takes {auto: true}",
}


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for arg in [field.annotation, *get_args(field.annotation)]:
            for inner in [arg, *get_args(arg)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    _models(inner, seen)


def test_every_validator_has_a_cel_rule_or_says_why_not() -> None:
    seen: set[type[BaseModel]] = set()
    for model in KINDS.values():
        _models(model, seen)
    without: set[str] = set()
    for model in seen:
        decorators = model.__pydantic_decorators__
        for name, d in [*decorators.model_validators.items(), *decorators.field_validators.items()]:
            if not rules_of_validator(d.func):
                without.add(f"{model.__name__}.{name}")
    assert without == set(PYDANTIC_ONLY)
    assert len(rules_of(ScalingSpec)) == 1 and not rules_of(SLOSpec)


@given(
    count=st.one_of(st.none(), st.integers(0, 3)),
    mig=st.one_of(st.none(), st.sampled_from(["1g.10gb", "3g.40gb"])),
    milli=st.one_of(st.none(), st.integers(1, 999)),
    auto=st.one_of(st.none(), st.booleans()),
)
def test_gpu_rule_agrees_with_pydantic(
    count: int | None, mig: str | None, milli: int | None, auto: bool | None
) -> None:
    pairs = (("count", count), ("migProfile", mig), ("milli", milli), ("auto", auto))
    raw = {k: v for k, v in pairs if v is not None}
    ok, message = _pydantic(GPURequest, raw)
    cel_ok, broken = _verdict("spec.resources.gpu", raw)
    assert cel_ok == ok, (raw, message, broken)
    if not ok:
        assert broken == ["set only one of 'count', 'migProfile', 'milli' or 'auto'"]
        assert broken[0] in message


@given(
    engine=st.sampled_from(["sim", "vllm", None]),
    gpu=st.sampled_from([None, {}, {"auto": True}, {"auto": False, "count": 1}]),
)
def test_auto_size_rule_agrees_with_pydantic(
    engine: str | None, gpu: dict[str, Any] | None
) -> None:
    raw: dict[str, Any] = {"source": {"uri": "h100-llama3-8b"}}
    raw |= {"engine": {"name": engine}} if engine else {}
    raw |= {"resources": {"gpu": gpu}} if gpu is not None else {}
    ok, message = _pydantic(ModelSpec, raw)
    cel_ok, broken = _verdict("spec", raw)
    assert cel_ok == ok, (raw, message, broken)
    assert ok == (engine == "sim" or not (gpu or {}).get("auto")), raw
    if not ok:
        assert len(broken) == 1 and broken[0] in message


@given(
    low=st.one_of(st.none(), st.integers(0, 1000)), high=st.one_of(st.none(), st.integers(1, 1000))
)
def test_replica_rule_agrees_with_pydantic(low: int | None, high: int | None) -> None:
    raw = {k: v for k, v in (("minReplicas", low), ("maxReplicas", high)) if v is not None}
    ok, message = _pydantic(ScalingSpec, raw)
    cel_ok, broken = _verdict("spec.scaling", raw)
    assert cel_ok == ok, (raw, message, broken)
    if not ok:  # pydantic's message adds the two values
        assert broken == ["minReplicas exceeds maxReplicas"]
        assert f"minReplicas ({low}) exceeds maxReplicas ({high if high else 1})" in message


@given(
    engine=st.one_of(
        st.none(),
        st.just({}),
        st.builds(lambda n: {"name": n}, st.sampled_from(get_args(EngineName))),
    ),
    source=st.sampled_from([{"uri": "hf://org/m"}, {"url": "http://10.0.0.1:8000/v1"}]),
)
def test_engine_source_rule_agrees_with_pydantic(
    engine: dict[str, str] | None, source: dict[str, str]
) -> None:
    raw: dict[str, Any] = {"source": source} | ({"engine": engine} if engine is not None else {})
    ok, message = _pydantic(ModelSpec, raw)
    cel_ok, broken = _verdict("spec", raw)
    assert cel_ok == ok, (raw, message, broken)
    if not ok:
        assert broken == [_node("spec")["x-kubernetes-validations"][0]["message"]]
        assert broken[0] in message


@pytest.mark.parametrize(
    "source", [{}, {"uri": "hf://org/m", "url": "http://h/v1"}, {"uri": "hf://org/m"}]
)
def test_source_rule_agrees_with_pydantic(source: dict[str, str]) -> None:
    ok, message = _pydantic(ModelSource, source)
    cel_ok, broken = _verdict("spec.source", source)
    assert cel_ok == ok
    assert all(b in message for b in broken)


def test_rules_can_fail_when_a_guard_is_missing() -> None:
    # The rule must not read an optional field that is absent: the apiserver would report an
    # evaluation error. celpy raises the same way, so these tests would catch a missing has().
    with pytest.raises(celpy.CELEvalError):
        _cel("self.engine.name == 'external'", {"source": {"uri": "hf://org/m"}})


@pytest.mark.parametrize("steps", [[100], [5, 25, 100], [5, 50], [99]])
def test_prompt_rollout_rule_agrees_with_pydantic(steps: list[int]) -> None:
    ok, message = _pydantic(PromptRollout, {"steps": steps})
    [rule] = rules_of(PromptRollout)
    assert bool(_cel(rule.rule, {"steps": steps})) == ok
    assert ok or rule.message in message
