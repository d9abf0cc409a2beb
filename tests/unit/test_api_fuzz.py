"""Hypothesis: whatever a user writes, loading gives resources or a SpecError, never a crash."""

from __future__ import annotations

import contextlib
import io
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from kapell.api.errors import SpecError
from kapell.api.loader import load_text

BASE: dict[str, Any] = {
    "apiVersion": "kapell.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "m", "labels": {"team": "a"}},
    "spec": {
        "source": {"uri": "hf://org/m"},
        "engine": {"name": "vllm", "args": ["--x"]},
        "resources": {"cpu": "2", "memory": "8Gi", "gpu": {"milli": 500, "memory": "20Gi"}},
        "scaling": {"minReplicas": 0, "maxReplicas": 3, "scaleToZeroAfter": "5m"},
        "routing": {"strategy": "prefix-affinity"},
        "slo": {"ttft": "1s", "tpot": "100ms"},
    },
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["1h", "0", "-1", "Gi", "hf://", "s3://b", "1g.10gb"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    return out


PATHS = _paths(BASE)


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "replace":
        parent[path[-1]] = value
    elif action == "delete":
        del parent[path[-1]]
    else:
        parent[str(value)[:10] or "x"] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(["replace", "delete", "add"]), values),
        min_size=1, max_size=4,
    )
)  # fmt: skip
def test_mutated_specs_load_or_raise_spec_error(mutations: list[Any]) -> None:
    import copy

    doc = copy.deepcopy(BASE)
    for path, action, value in mutations:
        try:
            _mutate(doc, path, action, value)
        except (KeyError, TypeError):
            continue  # the path no longer exists after an earlier mutation
    buffer = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, buffer)
    try:
        load_text(buffer.getvalue(), "fuzz.yaml")
    except SpecError as exc:
        assert exc.problems, "a SpecError must carry at least one problem"
        for problem in exc.problems:
            assert problem.file == "fuzz.yaml" and problem.line >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with contextlib.suppress(SpecError):
        load_text(text, "t.yaml")


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["!", "!!", "!<tag:x>", "&a ", "*a ", "? "]),
    st.text(alphabet="!0a:[]{} -\n", max_size=12),
)
def test_text_with_tags_and_anchors_never_crashes(prefix: str, rest: str) -> None:
    """Tags and aliases are where the round-trip loader returns objects that are not plain YAML."""
    with contextlib.suppress(SpecError):
        load_text(prefix + rest, "t.yaml")
