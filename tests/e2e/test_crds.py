"""The real apiserver accepts kapell's generated CRDs and validates objects against them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kapell.api.loader import load_text

SAMPLE_MODEL = (Path(__file__).resolve().parents[1] / "data" / "model-valid.yaml").read_text()


def test_kapell_crds_are_established_and_a_sample_model_is_stored(
    kapell_crds: str, kubectl: Callable[..., str], namespace: str
) -> None:
    [model] = load_text(SAMPLE_MODEL, "sample.yaml")
    manifest = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    manifest["metadata"].pop(
        "namespace"
    )  # kapell's default; the test's namespace is given to kubectl
    kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))

    stored = json.loads(kubectl("get", "models.kapell.dev", "tiny", "-n", namespace, "-o", "json"))
    assert stored["spec"]["source"]["uri"] == "hf://org/tiny@main"
    assert stored["spec"]["scaling"]["maxReplicas"] == 3


def test_apiserver_rejects_a_model_that_breaks_the_generated_schema(
    kapell_crds: str, kubectl: Callable[..., str], namespace: str
) -> None:
    bad = SAMPLE_MODEL.replace("maxReplicas: 3", "maxReplicas: many")
    with pytest.raises(AssertionError, match=r"spec\.scaling\.maxReplicas"):
        kubectl("create", "-n", namespace, "-f", "-", stdin=bad)


def test_apiserver_enforces_the_cel_rules_with_messages_naming_the_fields(
    kapell_crds: str, kubectl: Callable[..., str], namespace: str
) -> None:
    bad = (
        SAMPLE_MODEL.replace("minReplicas: 0", "minReplicas: 5")
        .replace("migProfile: 1g.10gb", "migProfile: 1g.10gb\n      milli: 500")
        .replace("source:", "engine:\n    name: external\n  source:")
    )
    with pytest.raises(AssertionError) as refused:
        kubectl("create", "-n", namespace, "-f", "-", stdin=bad)
    message = str(refused.value)
    assert "spec.scaling.minReplicas: Invalid value" in message
    assert "minReplicas exceeds maxReplicas" in message
    assert "spec.resources.gpu: Invalid value" in message
    assert "set only one of 'count', 'migProfile', 'milli' or 'auto'" in message
    assert "engine 'external' takes source.url" in message
    assert 'The Model "tiny" is invalid' in message  # the apiserver's 422, field by field
    # The same object without the three faults is stored: the rules refuse only what they should.
    kubectl("create", "-n", namespace, "-f", "-", stdin=SAMPLE_MODEL)


def test_ecosystem_crds_install_and_become_established(
    ecosystem_crds: list[str], kubectl: Callable[..., str]
) -> None:
    groups = {name.split("/", 1)[1].split(".", 1)[1] for name in ecosystem_crds}
    assert {"ray.io", "serving.kserve.io", "kueue.x-k8s.io", "scheduling.volcano.sh", "keda.sh",
            "gateway.networking.k8s.io", "inference.networking.k8s.io"} <= groups  # fmt: skip
    served = kubectl("api-resources", "--api-group=ray.io", "-o", "name").split()
    assert "rayjobs.ray.io" in served
