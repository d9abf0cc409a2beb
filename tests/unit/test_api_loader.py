"""Loading resources: every problem reported once, with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapell.api import Model
from kapell.api.errors import SpecError
from kapell.api.loader import load_files, load_text

DATA = Path(__file__).resolve().parents[1] / "data"

VALID = (DATA / "model-valid.yaml").read_text()

THREE_ERRORS = (DATA / "model-three-errors.yaml").read_text()


def test_valid_model_loads_with_camel_case_fields() -> None:
    [model] = load_text(VALID, "ok.yaml")
    assert isinstance(model, Model)
    assert model.spec.scaling.min_replicas == 0
    assert model.spec.resources.gpu is not None
    assert model.spec.resources.gpu.milli_gpus == 142
    assert model.spec.source.scheme == "hf"


def test_three_planted_errors_give_three_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(THREE_ERRORS)
    with pytest.raises(SpecError) as info:
        load_files([path])
    lines = [str(p) for p in info.value.problems]
    assert lines == [
        f"{path}:4: metadata.name: invalid name 'Bad_Name': use lower-case letters, digits "
        "and '-', starting and ending with a letter or digit (DNS-1123)",
        f"{path}:9: spec.scaling.minReplica: unknown field; did you mean 'minReplicas'?",
        f"{path}:11: spec.routing.strategy: invalid value 'fastest'; input should be "
        "'least-tokens', 'prefix-affinity' or 'round-robin'",
    ]


def test_problems_from_several_documents_are_all_reported() -> None:
    text = (
        VALID
        + "---\napiVersion: v1\nkind: Model\n---\nkind: Modle\napiVersion: kapell.dev/v1alpha1\n"
    )
    with pytest.raises(SpecError) as info:
        load_text(text, "multi.yaml")
    assert [(p.line, p.path) for p in info.value.problems] == [(16, "apiVersion"), (19, "kind")]
    assert "did you mean 'Model'" in info.value.problems[1].message


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(SpecError) as info:
        load_text("kind: Model\nmetadata: [\n", "broken.yaml")
    [problem] = info.value.problems
    assert problem.file == "broken.yaml" and problem.line >= 2
    assert problem.message.startswith("invalid YAML")


def test_a_mapping_as_a_key_is_a_clear_error_not_a_crash() -> None:
    """Found by the fuzz test: ``? : :`` makes ruamel build an unhashable key (TypeError)."""
    with pytest.raises(SpecError) as caught:
        load_text("kind: Model\nspec:\n  ? : :\n", "m.yaml")
    assert str(caught.value) == (
        "m.yaml:3: invalid YAML: a mapping or list used as a key; keys must be plain names"
    )


def test_missing_required_field_points_at_its_parent() -> None:
    text = "apiVersion: kapell.dev/v1alpha1\nkind: Model\nmetadata:\n  name: a\nspec:\n  engine:\n    name: sim\n"
    with pytest.raises(SpecError) as info:
        load_text(text, "m.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.path, problem.message) == (
        5,
        "spec.source",
        "required field is missing",
    )


def test_duplicate_resource_is_reported() -> None:
    with pytest.raises(SpecError) as info:
        load_text(VALID + "---\n" + VALID, "dup.yaml")
    assert "already defined on line 1" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!0\n", "t.yaml:1: document 1 is not a mapping"),
        ("a: 1\n---\n\n!custom [1]\n", "t.yaml:4: document 2 is not a mapping"),
        (
            VALID.replace("spec:", "spec: !custom", 1),
            "spec: YAML tag '!custom' is not supported; remove it and write the plain value",
        ),
        (
            VALID.replace("name: tiny", "name: tiny\n  labels: !Labels {a: b}", 1),
            "t.yaml:5: metadata.labels: YAML tag '!Labels' is not supported",
        ),
    ],
)
def test_yaml_tags_are_refused_with_their_line(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_text(text, "t.yaml")
    assert expected in str(info.value), str(info.value)


def test_a_custom_tag_deep_in_the_spec_names_its_field_and_line() -> None:
    text = VALID.replace("uri:", "uri: !secret", 1)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "!secret" in t)
    with pytest.raises(SpecError) as info:
        load_text(text, "t.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.path) == (line, "spec.source.uri")


def test_a_str_tag_is_a_plain_string() -> None:
    [model] = load_text(VALID.replace("name: ", "name: !!str ", 1), "t.yaml")
    assert isinstance(model, Model) and isinstance(model.metadata.name, str)


def test_a_check_s_problems_get_the_line_of_the_field_they_name() -> None:
    text = (
        "apiVersion: kapell.dev/v1alpha1\nkind: Model\nmetadata: {name: a}\n"
        "spec:\n  source:\n    uri: hf://o/a\n"
        "---\n"
        "apiVersion: kapell.dev/v1alpha1\nkind: Model\nmetadata: {name: b}\n"
        "spec:\n  source: {uri: hf://o/b}\n"
    )

    def check(resource: object) -> list[tuple[tuple[str, ...], str]]:
        assert isinstance(resource, Model)
        # spec.engine is not written: the deepest part present (spec) gives the line.
        return [(("spec", "source", "uri"), "nope"), (("spec", "engine", "name"), "absent")]

    assert len(load_text(text, "m.yaml")) == 2
    with pytest.raises(SpecError) as info:
        load_text(text, "m.yaml", check)
    assert [str(p) for p in info.value.problems] == [
        "m.yaml:6: spec.source.uri: nope",
        "m.yaml:4: spec.engine.name: absent",
        "m.yaml:12: spec.source.uri: nope",
        "m.yaml:11: spec.engine.name: absent",
    ]
