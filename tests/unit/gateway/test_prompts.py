"""Rendering a prompt version, reading a request's prompt object, and the sticky split."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kapell.api.prompt import PromptSpec, PromptVersion, template_variables, version_conflict
from kapell.gateway.errors import GatewayError
from kapell.gateway.prompts import PromptRef, render, sticky_bucket

V1 = PromptVersion(version=1, model="m", template="Hi {{name}} from {{ city }}, {{name}}!",
                   variables=["name", "city"])  # fmt: skip


def test_render_fills_every_use_and_names_what_does_not_fit() -> None:
    assert render(V1, {"name": "Ann", "city": 3}) == "Hi Ann from 3, Ann!"
    assert render(V1, {"name": {"type": "input_text", "text": "Bo"}, "city": "X"}).startswith(
        "Hi Bo"
    )
    with pytest.raises(GatewayError, match=r"missing: city; unknown: town") as info:
        render(V1, {"name": "Ann", "town": "X"})
    assert info.value.status == 400 and info.value.param == "prompt"
    with pytest.raises(GatewayError, match="variable 'city' must be a string"):
        render(V1, {"name": "Ann", "city": ["x"]})


def test_retrieved_text_is_one_more_variable() -> None:
    rag = PromptVersion(version=1, model="m", template="{{context}}\nQ: {{q}}",
                        variables=["context", "q"])  # fmt: skip
    assert render(rag, {"q": "why?"} | {"context": "because"}) == "because\nQ: why?"


def test_prompt_refs_are_read_strictly() -> None:
    ref = PromptRef.parse({"id": "greet", "version": "2", "variables": {"a": "b"}})
    assert (ref.name, ref.version, ref.variables) == ("greet", 2, {"a": "b"})
    assert PromptRef.parse({"id": "greet"}).version is None
    for bad, words in [
        ("greet", "must be an object"),
        ({"id": "greet", "version": "v2"}, "must be a version number"),
        ({"id": "greet", "variables": []}, "must be an object of variable names"),
        ({"id": "greet", "vars": {}}, "unknown field"),
    ]:
        with pytest.raises(GatewayError, match=words):
            PromptRef.parse(bad)


def test_the_canary_keeps_its_users_as_its_weight_grows() -> None:
    buckets = [sticky_bucket("greet", f"user-{i}") for i in range(2000)]
    assert buckets == [sticky_bucket("greet", f"user-{i}") for i in range(2000)]
    at_5 = {i for i, b in enumerate(buckets) if b < 5}
    at_25 = {i for i, b in enumerate(buckets) if b < 25}
    assert at_5 <= at_25  # the canary owns the lowest buckets
    assert 0.03 < len(at_5) / 2000 < 0.07 and 0.21 < len(at_25) / 2000 < 0.29
    assert sticky_bucket("other", "user-1") != sticky_bucket("greet", "user-1")


def test_specs_must_agree_with_their_templates() -> None:
    assert template_variables("{{a}} {{ b }} {{a}}") == ["a", "b"]
    with pytest.raises(ValidationError, match=r"declared but not in the template: c"):
        PromptSpec(model="m", template="{{a}}", variables=["a", "c"])
    with pytest.raises(ValidationError, match=r"used but not declared: a"):
        PromptSpec(model="m", template="{{a}}", variables=[])
    with pytest.raises(ValidationError, match="the last step must be 100"):
        PromptSpec.model_validate({"model": "m", "template": "x", "rollout": {"steps": [5, 50]}})
    changed = V1.model_copy(update={"template": "Yo {{name}} {{city}}"})
    assert version_conflict("greet", V1, V1) is None
    message = version_conflict("greet", V1, changed)
    assert message is not None and "version 1 is already applied with another template" in message
