"""The gateway in the cluster: ``kapell gateway`` routes to the operator's pods through their
EndpointSlices, and reports demand to the operator, which scales a Model up from zero."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubeobjects import eventually
from lightkube import Client
from openai import APIStatusError, AsyncOpenAI, OpenAI
from operators import KAPELL, OperatorProcess, apply, pods_of, wait_ready
from prometheus_client.parser import text_string_to_metric_families
from test_operator_serving import FAST_SIM, _pid, serving_model

from kapell.api.metrics import ENGINE_REQUEST_SUCCESS, GATEWAY_UPSTREAM_RETRIES
from kapell.devcluster import DevCluster

BURST = 100
COLD_START_S = 3.0


class ClusterGateway:
    """``kapell gateway`` for one namespace, as a process; ``url`` once it serves."""

    def __init__(
        self, kubeconfig: Path, namespace: str, operator_port: int, log: Path, *flags: str
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(KAPELL), "gateway", f"--kubeconfig={kubeconfig}", f"--namespace={namespace}",
                 f"--operator-url=http://127.0.0.1:{operator_port}", "--port=0", *flags],
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
    assert _counter(engine_url, ENGINE_REQUEST_SUCCESS) == BURST, (
        "a request reached the engine twice (or not)"
    )
    delay = firsts[0] - engine_ready
    print(
        f"\nscale from zero: engine ready {engine_ready - started:.2f} s after the burst; "
        f"first token {delay:.3f} s after the engine was ready "
        f"(median {firsts[len(firsts) // 2] - engine_ready:.3f} s, last {firsts[-1] - engine_ready:.3f} s)"
    )
    assert delay < 3.0


class _Load:
    """Workers sending chat requests to gateway URLs in turn; a failed request is sent again
    to the next gateway (what a client behind a load balancer does), counted by where it failed."""

    def __init__(self, urls: list[str], model: str, workers: int = 6) -> None:
        self.clients = [OpenAI(base_url=f"{u}/v1", api_key="unused", max_retries=0) for u in urls]
        self.model = model
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = [0] * len(urls)
        self.answered = 0
        self.failed_at: list[tuple[int, float]] = []  # (gateway index, when the request started)
        self.unanswered = 0
        self.threads = [threading.Thread(target=self._work, args=(i,)) for i in range(workers)]

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _send(self, index: int) -> bool:
        with self.lock:
            self.in_flight[index] += 1
        started = time.monotonic()
        try:
            self.clients[index].chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "hi"}], max_tokens=16
            )
            return True
        except Exception:
            with self.lock:
                self.failed_at.append((index, started))
            return False
        finally:
            with self.lock:
                self.in_flight[index] -= 1

    def _work(self, worker: int) -> None:
        turn = worker
        while not self.stop.is_set():
            tries = [(turn + k) % len(self.clients) for k in range(len(self.clients))]
            turn += 1
            if any(self._send(index) for index in tries):
                with self.lock:
                    self.answered += 1
            else:
                with self.lock:
                    self.unanswered += 1


def test_a_killed_gateway_replica_loses_only_its_in_flight_requests(
    dev_cluster: DevCluster,
    operator: OperatorProcess,
    kube: Client,
    kubectl: Any,
    namespace: str,
    gateway: ClusterGateway,
    tmp_path: Path,
) -> None:
    apply(kubectl, serving_model("steady", namespace, args=FAST_SIM))
    wait_ready(kube, "steady", namespace)
    other = ClusterGateway(dev_cluster.kubeconfig, namespace, operator.port, tmp_path / "b.log")
    try:
        for url in (gateway.url, other.url):
            client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            eventually(lambda c=client: [m for m in c.models.list()] or None, "model listed")
        with _Load([gateway.url, other.url], "steady") as load:
            time.sleep(3)
            with load.lock:
                in_flight_at_kill = load.in_flight[0]
                killed_at = time.monotonic()
            gateway.proc.send_signal(signal.SIGKILL)
            time.sleep(3)
    finally:
        other.stop()
    lost = [started for index, started in load.failed_at if index == 0 and started < killed_at]
    assert load.unanswered == 0, "a request failed on both gateway replicas"
    assert [i for i, _ in load.failed_at if i == 1] == [], "the surviving replica failed"
    assert len(lost) <= in_flight_at_kill
    assert load.answered > 50


def test_a_dead_endpoint_costs_at_most_one_retried_request(
    kube: Client, kubectl: Any, namespace: str, gateway: ClusterGateway
) -> None:
    manifest = serving_model("pair", namespace, replicas=2, args=FAST_SIM)
    # Requests alternate, so one of the first two after the kill goes to the dead endpoint.
    manifest["spec"]["routing"] = {"strategy": "round-robin"}
    apply(kubectl, manifest)
    wait_ready(kube, "pair", namespace, replicas=2)
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)

    def served(pod: dict[str, Any]) -> float:
        return _counter(f"http://{pod['status']['podIP']}:8000", ENGINE_REQUEST_SUCCESS)

    def both_served() -> bool | None:
        client.chat.completions.create(
            model="pair", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        return True if all(served(pod) > 0 for pod in pods_of(kube, namespace, "pair")) else None

    # The pods are Ready before the gateway's EndpointSlice watch lists both; until then every
    # request goes to the one it knows.
    eventually(both_served, "the gateway to route to both replicas", timeout_s=30)
    victim = pods_of(kube, namespace, "pair")[0]
    os.kill(_pid(victim), signal.SIGKILL)
    deadline = time.monotonic() + 8  # past the readiness probe's 3 failures and the slice update
    answered = 0
    while time.monotonic() < deadline:
        client.chat.completions.create(
            model="pair", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        answered += 1
    assert answered > 20
    # One retry if a request reaches the dead engine before its slice drops it (then it is
    # skipped for 10 s), none if the slice is faster: never one per request.
    assert _counter(gateway.url, GATEWAY_UPSTREAM_RETRIES) <= 1


def test_ten_times_overload_answers_429s_never_5xx(
    dev_cluster: DevCluster,
    operator: OperatorProcess,
    kube: Client,
    kubectl: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Room for 6 requests (2 upstream, 4 queued) and 60 at once: the rest are told to come back."""
    apply(kubectl, serving_model("busy", namespace, args=FAST_SIM))
    wait_ready(kube, "busy", namespace)
    small = ClusterGateway(
        dev_cluster.kubeconfig, namespace, operator.port, tmp_path / "gw.log",
        "--max-in-flight-per-replica=2", "--queue-max-per-model=4",
    )  # fmt: skip
    try:
        client = AsyncOpenAI(base_url=f"{small.url}/v1", api_key="unused", max_retries=0)

        async def one() -> int:
            try:
                await client.chat.completions.create(
                    model="busy", messages=[{"role": "user", "content": "hi"}], max_tokens=64
                )
            except APIStatusError as exc:
                return exc.status_code
            return 200

        async def burst() -> list[int]:
            await one()  # the gateway has seen the ready endpoint
            return await asyncio.gather(*(one() for _ in range(60)))

        statuses = collections.Counter(asyncio.run(burst()))
    finally:
        small.stop()
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0 and statuses[200] >= 6, statuses


def _counter(url: str, name: str) -> float:
    """The sum of every sample of the counter ``name`` on ``url``'s ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )
