"""The console served by ``kapell operator``: each replica with the node, GPU and slice the
operator placed it on, read back from the pods' placement annotations."""

from __future__ import annotations

import html
import urllib.request
from collections.abc import Callable

from kubeobjects import eventually
from lightkube import Client
from operators import OperatorProcess, apply, model, pods_of, wait_ready

from kapell.backends.kubernetes.inventory import Placement
from kapell.cli.console_cluster import describe_placement


def page(operator: OperatorProcess, path: str) -> str:
    url = f"http://127.0.0.1:{operator.port}/console{path}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return html.unescape(answer.read().decode())


def shows(operator: OperatorProcess, path: str, *texts: str) -> bool | None:
    text = page(operator, path)
    return True if all(t in text for t in texts) else None


def test_the_operator_console_shows_each_replica_where_it_was_placed(
    operator: OperatorProcess, kube: Client, kubectl: Callable[..., str], namespace: str
) -> None:
    apply(
        kubectl,
        model("slice", namespace, {"migProfile": "1g.10gb"}),
        model("share", namespace, {"milli": 300}),
    )
    for name in ("slice", "share"):
        wait_ready(kube, name, namespace)

    models = page(operator, "/")
    assert "kubernetes" in models and 'data-model="slice"' in models
    for name in ("slice", "share"):
        [pod] = pods_of(kube, namespace, name)
        meta = pod["metadata"]
        placement = Placement.from_json(meta["annotations"]["kapell.dev/placement"])
        expected = describe_placement(placement)
        assert ("MIG 1g.10gb" if name == "slice" else "300/1000") in expected
        row = f"{namespace}/{meta['name']}"
        part = f"/models/{namespace}/{name}"
        eventually(
            lambda part=part, row=row, expected=expected: shows(operator, part, row, expected),
            f"{name}'s replica and placement on the console",
            30,
        )
    training = page(operator, "/training")  # TrainingJobs are carried (KubeRay), none applied
    assert "No TrainingJob." in training and "not run in this mode yet" not in training
    assert "not carried in this mode yet" in page(operator, "/prompts")
