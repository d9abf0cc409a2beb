"""Models that really serve on the dev cluster: the operator's pods run on the node agent's nodes.

The operator runs as a process (the session's ``operator`` fixture); Models ask for
the serving nodes with ``nodeSelector``, so the agent starts their engines in network
namespaces with the devices of their claims in the environment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubeobjects import eventually
from lightkube import Client
from lightkube.resources.resource_v1 import ResourceSlice
from openai import APIConnectionError, OpenAI
from operators import (
    OperatorProcess,
    apply,
    claims_in,
    model,
    node_ready,
    pods_of,
    status,
    wait_ready,
)

from conftest import REPO
from kapell.backends.kubernetes.inventory import Placement, devices_of
from kapell.devcluster import DevCluster
from kapell.devcluster.gpus import SERVING_LABEL
from kapell.devcluster.processes import start_ticks

TINY = REPO / "examples/models/tiny-shakespeare"
SERVING = {SERVING_LABEL: "true"}
FAST_SIM = ["--cold-start-s", "0"]


def serving_model(name: str, namespace: str, **kwargs: Any) -> dict[str, Any]:
    manifest = model(name, namespace, **kwargs)
    manifest["spec"]["nodeSelector"] = SERVING
    return manifest


def _pid(pod: dict[str, Any]) -> int:
    [container] = pod["status"]["containerStatuses"]
    return int(container["containerID"].removeprefix("kapell-dev://"))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def test_the_quickstart_model_serves_from_its_pod_and_leaves_nothing_when_deleted(
    operator: OperatorProcess,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
) -> None:
    apply(kubectl, serving_model("tiny", namespace, engine="reference", uri=f"file://{TINY}",
                                 cpu="1", memory="1Gi"))  # fmt: skip
    ready = wait_ready(kube, "tiny", namespace)
    [endpoint] = ready["endpoints"]
    assert not endpoint.startswith("http://127."), "pod addresses must not be loopback"
    client = OpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "ROMEO:"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    chunks = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=24,
        stream=True,  # type: ignore[arg-type]
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed

    [pod] = pods_of(kube, namespace, "tiny")
    pid, ticks = _pid(pod), start_ticks(_pid(pod))
    assert ticks is not None
    kubectl("delete", "models.kapell.dev", "tiny", "-n", namespace, "--wait=true", "--timeout=90s")
    assert pods_of(kube, namespace) == [] and claims_in(kube, namespace) == []
    assert start_ticks(pid) != ticks, "the engine process outlived its Model"


def test_mig_and_two_shared_gpu_models_see_the_devices_placement_chose(
    operator: OperatorProcess,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
) -> None:
    sim = {"args": FAST_SIM}
    apply(kubectl, serving_model("slice", namespace, gpu={"migProfile": "1g.10gb"}, **sim))
    apply(kubectl, serving_model("ts-a", namespace, gpu={"milli": 500}, **sim))
    wait_ready(kube, "ts-a", namespace)
    apply(kubectl, serving_model("ts-b", namespace, gpu={"milli": 500}, **sim))
    for name in ("slice", "ts-b"):
        wait_ready(kube, name, namespace)

    uuids = {
        (s.spec.nodeName, d.name): d.uuid
        for s in kube.list(ResourceSlice)
        for d in devices_of(s.to_dict()["spec"])
    }
    claims = {c["metadata"]["name"]: c for c in claims_in(kube, namespace)}
    seen: dict[str, str] = {}
    for pod in pods_of(kube, namespace):
        name = pod["metadata"]["labels"]["kapell.dev/model"]
        placement = Placement.from_json(pod["metadata"]["annotations"]["kapell.dev/placement"])
        [claim_ref] = pod["spec"]["resourceClaims"]
        results = claims[claim_ref["resourceClaimName"]]["status"]["allocation"]["devices"][
            "results"
        ]
        allocated = {uuids[(r["pool"], r["device"])] for r in results}
        environ = _environ(_pid(pod))
        assert set(environ["NVIDIA_VISIBLE_DEVICES"].split(",")) == allocated, name
        assert environ["CUDA_VISIBLE_DEVICES"] == environ["NVIDIA_VISIBLE_DEVICES"]
        assert pod["spec"]["nodeName"] == placement.node
        seen[name] = environ["NVIDIA_VISIBLE_DEVICES"]
    assert seen["slice"].startswith("MIG-")
    assert seen["ts-a"] == seen["ts-b"], "two halves of a GPU were not put on one GPU"


class _Traffic:
    """Requests in a loop to the Model's ready endpoints, as a client-side balancer sends them:
    a refused connection (no replica took the request) is retried on a fresh endpoint list;
    anything else that is not a complete 200 counts as a failure."""

    def __init__(self, kube: Client, name: str, namespace: str) -> None:
        self._kube, self._name, self._namespace = kube, name, namespace
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            endpoints = status(self._kube, self._name, self._namespace).get("endpoints") or []
            if not endpoints:
                time.sleep(0.05)
                continue
            turn += 1
            client = OpenAI(base_url=f"{endpoints[turn % len(endpoints)]}/v1", api_key="x",
                            max_retries=0, timeout=30)  # fmt: skip
            try:
                reply = client.completions.create(model=self._name, prompt="hi", max_tokens=4)
                if reply.choices[0].text is None:
                    self.failures.append("empty reply")
                else:
                    self.ok += 1
            except APIConnectionError as exc:
                if not isinstance(exc.__cause__, httpx.ConnectError):
                    self.failures.append(f"{type(exc.__cause__).__name__}: {exc}")
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def watch_pods(kube: Client, namespace: str) -> Iterator[list[tuple[int, int]]]:
    """(pods, ready pods) of the namespace, sampled every 100 ms while the test runs."""
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pods = [
                p for p in pods_of(kube, namespace) if not p["metadata"].get("deletionTimestamp")
            ]
            ready = sum(
                any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
                for p in pods
            )  # fmt: skip
            samples.append((len(pods), ready))
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    yield samples
    stop.set()
    thread.join(timeout=10)


def test_a_changed_model_rolls_one_replica_at_a_time_without_a_failed_request(
    operator: OperatorProcess,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
    watch_pods: list[tuple[int, int]],
) -> None:
    apply(kubectl, serving_model("roll", namespace, replicas=2, args=FAST_SIM))
    wait_ready(kube, "roll", namespace, replicas=2)
    old = {p["metadata"]["name"] for p in pods_of(kube, namespace)}
    with _Traffic(kube, "roll", namespace) as traffic:
        time.sleep(2)
        watch_pods.clear()
        apply(
            kubectl,
            serving_model("roll", namespace, replicas=2, args=[*FAST_SIM, "--speedup", "2"]),
        )

        def rolled() -> bool | None:
            names = {p["metadata"]["name"] for p in pods_of(kube, namespace)}
            done = not names & old and status(kube, "roll", namespace).get("readyReplicas") == 2
            return True if done else None

        eventually(rolled, "every replica replaced", 120)
        time.sleep(2)
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok > 20
    assert max(total for total, _ in watch_pods) <= 3, "more than one replica surged"
    assert min(ready for _, ready in watch_pods) >= 2, "a rollout step dropped a ready replica"


def test_a_lost_serving_node_has_its_replicas_replaced_on_another_node(
    operator: OperatorProcess,
    dev_cluster: DevCluster,
    kube: Client,
    kubectl: Callable[..., str],
    namespace: str,
) -> None:
    serving, spare = "gpu-node-0000", "gpu-node-0002"  # the agent's H100 node, a kwok H100 node
    pool = {"e2e.kapell.dev/pool": namespace}
    kubectl("label", "node", serving, spare, f"e2e.kapell.dev/pool={namespace}")
    kubectl("cordon", spare)
    manifest = model("spread", namespace, gpu={"count": 1}, replicas=2, args=FAST_SIM)
    manifest["spec"]["nodeSelector"] = pool
    apply(kubectl, manifest)
    wait_ready(kube, "spread", namespace, replicas=2)
    assert {p["spec"]["nodeName"] for p in pods_of(kube, namespace)} == {serving}
    kubectl("uncordon", spare)
    agent = dev_cluster.processes.crash("node-agent")  # the serving nodes go silent
    try:

        def replaced() -> bool | None:
            pods = [
                p for p in pods_of(kube, namespace) if not p["metadata"].get("deletionTimestamp")
            ]
            nodes = {p["spec"].get("nodeName") for p in pods}
            ready = status(kube, "spread", namespace).get("readyReplicas")
            return True if nodes == {spare} and len(pods) == 2 and ready == 2 else None

        eventually(replaced, f"replicas moved from the lost {serving} to {spare}", 150)
    finally:
        dev_cluster.processes.relaunch("node-agent", agent)
        kubectl("label", "node", serving, spare, "e2e.kapell.dev/pool-")
        eventually(
            lambda: True if node_ready(kubectl, serving) else None, f"{serving} Ready again", 90
        )
