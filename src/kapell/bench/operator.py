"""``kapell bench operator``: the operator at scale on the dev cluster, beside Deployments.

One run starts a dev cluster of kwok GPU nodes, then measures two ways to get the same pods
Ready, one after the other on the same cluster:

* **baseline**: ``models`` Deployments of ``replicas`` pods each, handled by
  kube-controller-manager; each pod gets a claim for one whole GPU from a
  ResourceClaimTemplate (made by kube-controller-manager), any GPU kube-scheduler finds;
* **kapell**: ``models`` Models of ``replicas`` replicas of one whole GPU each, the device
  chosen by kapell's policy and pinned in the claim, reconciled by ``kapell operator``.

Each pod has one claim for one device on both sides. The baseline runs first and is deleted
before kapell starts (the cluster has room for one side at a time). Times are from the first
create to the moment every pod reports Ready (watched, not polled). The operator's reconcile latencies and
API writes come from its own Prometheus metrics, its peak RSS from the kernel (``VmHWM``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Pod
from prometheus_client.parser import text_string_to_metric_families

from kapell.api import KINDS, metrics
from kapell.api.crd import crd
from kapell.api.errors import BackendError
from kapell.backends.kubernetes.informer import Informer
from kapell.backends.kubernetes.store import ModelResource
from kapell.devcluster import DevCluster, GpuPool
from kapell.devcluster.cluster import NODE_GRACE_S
from kapell.net import free_port

Progress = Callable[[str], None]
WRITERS = 16  # concurrent creates, for both sides
READY_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class OperatorBench:
    models: int
    nodes: int
    replicas: int = 10
    gpus: str = "h100:10"
    state_dir: Path = Path(".kapell/bench-operator")
    bin_dir: Path | None = None
    baseline: bool = True
    """Measure the Deployments too (off: kapell's side alone, e.g. to rerun its latencies)."""


def _pod_ready(raw: dict[str, Any]) -> bool:
    conditions = (raw.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ReadyCounter:
    """Counts Ready pods in a namespace from a watch, and notes when a target is first met."""

    def __init__(self, client: Client, namespace: str) -> None:
        self._lock = threading.Lock()
        self._ready: set[tuple[str, str]] = set()
        self.informer = Informer(client, Pod, _pod_ready, self._changed, namespace=namespace)
        self._target = 0
        self.reached = threading.Event()

    def _changed(self, key: tuple[str, str], ready: bool | None) -> None:
        with self._lock:
            if ready:
                self._ready.add(key)
            else:
                self._ready.discard(key)
            if self._target and len(self._ready) >= self._target:
                self.reached.set()

    def wait(self, target: int, timeout_s: float) -> None:
        with self._lock:
            self._target = target
            if len(self._ready) >= target:
                self.reached.set()
        if not self.reached.wait(timeout_s):
            raise BackendError(
                f"only {len(self._ready)}/{target} pods Ready after {timeout_s:.0f} s"
            )


async def _create_all(kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
    assert ModelResource  # defining the generic resource is what lets from_dict load Models
    client = AsyncClient(KubeConfig.from_file(kubeconfig), field_manager="kapell-bench")
    writers = asyncio.Semaphore(WRITERS)

    async def create(manifest: dict[str, Any]) -> None:
        async with writers:
            await client.create(from_dict(manifest))

    try:
        await asyncio.gather(*(create(m) for m in manifests))
    finally:
        await client.close()


def _timed_rollout(
    cluster: DevCluster, client: Client, namespace: str, manifests: list[dict[str, Any]], pods: int
) -> float:
    """Seconds from the first create until ``pods`` pods of ``namespace`` are Ready."""
    client.create(Namespace(metadata={"name": namespace}))  # type: ignore[arg-type]
    counter = ReadyCounter(client, namespace)
    counter.informer.start()
    counter.informer.synced.wait(60)
    started = time.monotonic()
    asyncio.run(_create_all(cluster.kubeconfig, manifests))
    counter.wait(pods, READY_TIMEOUT_S)
    elapsed = time.monotonic() - started
    counter.informer.stop()
    return elapsed


def deployment_manifests(namespace: str, count: int, replicas: int) -> list[dict[str, Any]]:
    """One ResourceClaimTemplate (one whole GPU per pod) and one Deployment per model."""
    out: list[dict[str, Any]] = []
    for i in range(count):
        name = f"m-{i}"
        out.append({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1,
            }}]}}},
        })  # fmt: skip
        labels = {"app": name}
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": name}],
                    "containers": [{
                        "name": "engine", "image": "ghcr.io/kapell-dev/kapell:bench",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "claims": [{"name": "gpu"}]},
                    }],
                }},
            },
        })  # fmt: skip
    return out


def model_manifests(namespace: str, count: int, replicas: int) -> list[dict[str, Any]]:
    # fmt: off
    return [
        {
            "apiVersion": "kapell.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": f"m-{i}", "namespace": namespace},
            "spec": {
                "source": {"uri": "h100-llama3-8b"},
                "engine": {"name": "sim"},
                "resources": {"cpu": "100m", "memory": "128Mi", "gpu": {"count": 1}},
                "scaling": {
                    "minReplicas": replicas,
                    "maxReplicas": replicas,
                    "autoscaler": "static",
                },
                "nodeSelector": {"type": "kwok"},
            },
        }
        for i in range(count)
    ]
    # fmt: on


def _delete_and_wait(client: Client, namespace: str) -> None:
    """Delete a namespace and wait until it is gone, with its pods and claims (devices free)."""
    client.delete(Namespace, namespace)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            client.get(Namespace, namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return
            raise
        time.sleep(2)
    raise BackendError(f"namespace {namespace} still there after {READY_TIMEOUT_S:.0f} s")


def _install_crds(client: Client) -> None:
    """kapell's CRDs, as ``kapell crds`` prints them, applied and waited for."""
    documents = [crd(kind) for kind in KINDS.values()]
    for document in documents:
        client.apply(from_dict(document), field_manager="kapell-bench", force=True)
    for document in documents:
        name = document["metadata"]["name"]
        client.wait(CustomResourceDefinition, name, for_conditions=["Established"])


class OperatorRun:
    """``kapell operator`` as a child process with its metrics endpoint."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kapell.cli", "operator", f"--kubeconfig={kubeconfig}",
                 f"--port={self.port}", "--identity=bench"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait_watching(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "watching" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BackendError(f"kapell operator did not start; see {self.log}")
            time.sleep(0.2)

    def scrape(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a minute: the measurements are taken already."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket the quantile falls in.
    ``buckets`` are (upper bound, cumulative count), ascending, the last one +Inf."""
    total = buckets[-1][1]
    if total == 0:
        return 0.0
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _reconcile_stats(families: dict[str, Any]) -> tuple[list[tuple[float, float]], int, float]:
    family = families[metrics.OPERATOR_RECONCILE_SECONDS]
    buckets = sorted(
        (float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")
    )
    count = int(next(s.value for s in family.samples if s.name.endswith("_count")))
    writes = next(
        s.value for s in families[metrics.OPERATOR_API_WRITES.removesuffix("_total")].samples
    )
    return buckets, count, float(writes)


def run(config: OperatorBench, progress: Progress) -> dict[str, Any]:
    """The benchmark's JSON report (see the module docstring)."""
    cluster = DevCluster(config.state_dir, config.bin_dir)
    cluster.down()
    pods = config.models * config.replicas
    progress(f"starting a dev cluster of {config.nodes} kwok nodes ({config.gpus} each)")
    # kwok renews every node's Lease from one process, node_grace / 2.5 apart. Starved of CPU
    # while 10,000 pods start on 2 cores, it managed about 6 renewals a second: 1,000 nodes
    # need a 300 s grace to stay Ready (a node that misses it has all its pods marked not Ready).
    node_grace_s = max(NODE_GRACE_S, config.nodes * 3 // 10)
    up = cluster.up(
        config.nodes, [GpuPool.parse(config.gpus)], progress=progress, node_grace_s=node_grace_s
    )
    try:
        client = Client(KubeConfig.from_file(cluster.kubeconfig), field_manager="kapell-bench")
        _install_crds(client)
        baseline_s = None
        if config.baseline:
            progress(f"baseline: {config.models} Deployments x {config.replicas} pods")
            baseline_s = _timed_rollout(
                cluster, client, "bench-deployments",
                deployment_manifests("bench-deployments", config.models, config.replicas), pods,
            )  # fmt: skip
            progress(f"baseline: {pods} pods Ready in {baseline_s:.1f} s; deleting them")
            _delete_and_wait(client, "bench-deployments")
        operator = OperatorRun(cluster.kubeconfig, config.state_dir / "operator.log")
        try:
            operator.wait_watching()
            progress(f"kapell: {config.models} Models x {config.replicas} replicas")
            kapell_s = _timed_rollout(
                cluster, client, "bench-kapell",
                model_manifests("bench-kapell", config.models, config.replicas), pods,
            )  # fmt: skip
            progress(f"kapell: {pods} pods Ready in {kapell_s:.1f} s")
            time.sleep(3)  # the last status writes
            buckets, reconciles, writes = _reconcile_stats(operator.scrape())
            rss = operator.peak_rss_mb()
        finally:
            operator.stop()
    finally:
        progress("stopping the dev cluster")
        cluster.down()
    return {
        "models": config.models,
        "nodes": config.nodes,
        "gpus_per_node": GpuPool.parse(config.gpus).count,
        "pods": pods,
        "gpus_per_replica": 1,
        "cluster_ready_s": round(up.ready_s, 1),
        "node_grace_s": node_grace_s,
        "all_ready_s": round(kapell_s, 1),
        "deployments_all_ready_s": round(baseline_s, 1) if baseline_s else None,
        "all_ready_over_deployments": round(kapell_s / baseline_s, 3) if baseline_s else None,
        "reconcile_ms": {
            "p50": round(histogram_quantile(buckets, 0.5) * 1000, 1),
            "p99": round(histogram_quantile(buckets, 0.99) * 1000, 1),
        },
        "reconciles": reconciles,
        "api_writes": int(writes),
        "api_requests_per_reconcile": round(writes / reconciles, 2) if reconciles else None,
        "operator_peak_rss_mb": round(rss, 1),
        "quantiles_from": "histogram buckets, linear within a bucket (as Prometheus does)",
    }
