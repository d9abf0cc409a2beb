"""The gateway in the cluster: ``kapell gateway`` routes to the operator's pods through their
EndpointSlices, and reports demand to the operator, which scales a Model up from zero."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubeobjects import eventually
from lightkube import Client
from openai import AsyncOpenAI, OpenAI
from operators import KAPELL, OperatorProcess, apply, pods_of, wait_ready
from prometheus_client.parser import text_string_to_metric_families
from test_operator_serving import FAST_SIM, serving_model

from kapell.api.metrics import ENGINE_REQUEST_SUCCESS
from kapell.devcluster import DevCluster

BURST = 100
COLD_START_S = 3.0


class ClusterGateway:
    """``kapell gateway`` for one namespace, as a process; ``url`` once it serves."""

    def __init__(self, kubeconfig: Path, namespace: str, operator_port: int, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(KAPELL), "gateway", f"--kubeconfig={kubeconfig}", f"--namespace={namespace}",
                 f"--operator-url=http://127.0.0.1:{operator_port}", "--port=0"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def started() -> str | None:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("Gateway: "):
                    return line.split()[1]
            assert self.proc.poll() is None, self.log.read_text()
            return None

        self.url = eventually(started, "kapell gateway serving", 60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def gateway(
    dev_cluster: DevCluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> Iterator[ClusterGateway]:
    process = ClusterGateway(dev_cluster.kubeconfig, namespace, operator.port, tmp_path / "gw.log")
    yield process
    process.stop()


def test_a_completion_through_the_in_cluster_gateway(
    kube: Client, kubectl: Any, namespace: str, gateway: ClusterGateway
) -> None:
    apply(kubectl, serving_model("chat", namespace, args=FAST_SIM))
    wait_ready(kube, "chat", namespace)
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    eventually(lambda: "chat" in [m.id for m in client.models.list()] or None, "chat listed")
    reply = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.choices[0].message.content
    [pod] = pods_of(kube, namespace, "chat")
    assert pod["status"]["podIP"].startswith("10.244.")


def _engine_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == ENGINE_REQUEST_SUCCESS
    )


def _watch_engine_ready(kube: Client, namespace: str, stop: list[bool]) -> tuple[float, str]:
    """The moment the model's engine first answers its readiness probe, seen from here
    (polled every 10 ms from the moment its pod has an address), and its URL."""
    while not stop:
        pods = [p for p in pods_of(kube, namespace, "burst") if p["status"].get("podIP")]
        if pods:
            url = f"http://{pods[0]['status']['podIP']}:8000"
            while not stop:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        return time.monotonic(), url
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
        time.sleep(0.05)
    raise AssertionError("the engine never became ready")


def test_a_burst_at_zero_replicas_is_held_then_served_once_each(
    kube: Client, kubectl: Any, namespace: str, gateway: ClusterGateway
) -> None:
    manifest = serving_model("burst", namespace, args=["--cold-start-s", str(COLD_START_S)])
    manifest["spec"]["scaling"] = {"minReplicas": 0, "maxReplicas": 1}
    apply(kubectl, manifest)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    sync_client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    eventually(lambda: "burst" in [m.id for m in sync_client.models.list()] or None, "listed")
    assert pods_of(kube, namespace, "burst") == []

    async def one(i: int) -> tuple[float, str]:
        stream = await client.chat.completions.create(
            model="burst", messages=[{"role": "user", "content": f"request {i}"}],
            max_tokens=4, stream=True,
        )  # fmt: skip
        first, text = 0.0, ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.monotonic()
                text += chunk.choices[0].delta.content
        return first, text

    async def burst() -> tuple[list[Any], tuple[float, str]]:
        stop: list[bool] = []
        watcher = asyncio.get_running_loop().run_in_executor(
            None, _watch_engine_ready, kube, namespace, stop
        )
        results = await asyncio.gather(*(one(i) for i in range(BURST)), return_exceptions=True)
        stop.append(True)
        return results, await watcher

    started = time.monotonic()
    results, (engine_ready, engine_url) = asyncio.run(burst())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures[:3]
    firsts = sorted(first for first, _ in results)  # type: ignore[misc]
    assert all(text for _, text in results)  # type: ignore[misc]
    assert _engine_requests(engine_url) == BURST, "a request reached the engine twice (or not)"
    delay = firsts[0] - engine_ready
    print(
        f"\nscale from zero: engine ready {engine_ready - started:.2f} s after the burst; "
        f"first token {delay:.3f} s after the engine was ready "
        f"(median {firsts[len(firsts) // 2] - engine_ready:.3f} s, last {firsts[-1] - engine_ready:.3f} s)"
    )
    assert delay < 3.0
