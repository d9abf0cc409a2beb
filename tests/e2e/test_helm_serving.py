"""The Helm chart, installed, serves: its operator and gateway pods run on the dev cluster's
serving nodes (as their ServiceAccounts, with the chart's RBAC), and the quickstart Model answers
the official ``openai`` client through the chart's gateway."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from kubeobjects import eventually
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from openai import OpenAI
from operators import OperatorProcess, apply, wait_ready
from test_operator_serving import SERVING, TINY, serving_model
from tests.helmchart import BUILD_HINT, CHART, helm, helm_binary

from kapell.devcluster import DevCluster
from kapell.devcluster.gpus import SERVING_LABEL

WAIT_S = 240.0  # two operator candidates, a gateway and an engine start on 2 shared cores


def _ready_pods(kube: Client, namespace: str, component: str) -> list[Pod]:
    labels = {"app.kubernetes.io/component": component}
    pods = kube.list(Pod, namespace=namespace, labels=labels)
    return [
        p
        for p in pods
        if p.status
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def test_the_chart_serves_the_quickstart_model_through_its_gateway(
    dev_cluster: DevCluster,
    operator: OperatorProcess,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
) -> None:
    if not helm_binary().is_file():
        pytest.fail(f"no helm at {helm_binary()}: {BUILD_HINT}")
    kubeconfig = f"--kubeconfig={dev_cluster.kubeconfig}"
    on_serving_nodes = [
        f"--set-string={part}.nodeSelector.{SERVING_LABEL.replace('.', chr(92) + '.')}=true"
        for part in ("operator", "gateway")
    ]
    operator.kill(signal.SIGTERM)  # one operator acts on Models: the chart's
    try:
        helm("install", namespace, str(CHART), kubeconfig, "--namespace", namespace,
             f"--set=operator.watchNamespace={namespace}", "--set=gateway.replicas=1",
             *on_serving_nodes)  # fmt: skip
        leader = eventually(
            lambda: _ready_pods(kube, namespace, "operator") or None, "a leading operator", WAIT_S
        )
        assert len(leader) == 1, "only the Lease holder is Ready"
        [gateway] = eventually(
            lambda: _ready_pods(kube, namespace, "gateway") or None, "the gateway Ready", WAIT_S
        )
        model: dict[str, Any] = serving_model(
            "tiny", namespace, engine="onnx", uri=f"file://{TINY}", args=["--threads", "1"],
            cpu="1", memory="1Gi",
        )  # fmt: skip
        assert model["spec"]["nodeSelector"] == SERVING
        apply(kubectl, model)
        wait_ready(kube, "tiny", namespace)
        assert gateway.status and gateway.status.podIP
        client = OpenAI(
            base_url=f"http://{gateway.status.podIP}:8000/v1", api_key="unused", max_retries=0
        )
        reply = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=16)
        assert reply.choices[0].text
        kubectl(
            "delete", "models.kapell.dev", "tiny", "-n", namespace, "--wait=true", "--timeout=120s"
        )  # fmt: skip  (the chart's operator releases it)
        helm("uninstall", namespace, kubeconfig, "--namespace", namespace, "--wait",
             "--timeout=120s")  # fmt: skip
    finally:
        operator.start().wait_watching()
