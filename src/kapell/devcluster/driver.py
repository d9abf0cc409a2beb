"""kapell's fake DRA driver: publishes the fake GPU nodes, their ResourceSlices and DeviceClasses.

A real DRA driver runs on each node and publishes that node's devices once, then again when
they change. Fake GPUs never change, so publishing once at ``up`` is the whole job; the real
kube-scheduler then allocates claims against these slices exactly as it would against NVIDIA's.
Writes go out concurrently on one event loop (a thousand nodes are two thousand creates);
not on threads, because lightkube's model decoding is not safe to run on several at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Node, ServiceAccount

from kapell.devcluster.gpus import GpuPool, device_classes, node_manifest, resource_slice

_WRITERS = 16
FIELD_MANAGER = "kapell-dev-gpu-driver"


def client(kubeconfig: Path) -> Client:
    return Client(KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)


def publish(kubeconfig: Path, plan: list[tuple[int, GpuPool]], serving: int = 0) -> int:
    """Create DeviceClasses, Nodes and one ResourceSlice per node; return the device count.
    The first ``serving`` nodes of the plan are left to the node agent instead of kwok."""
    slices = [resource_slice(index, pool) for index, pool in plan]
    nodes = [node_manifest(index, pool, n < serving) for n, (index, pool) in enumerate(plan)]
    asyncio.run(_create_all(kubeconfig, [*device_classes(), *nodes, *slices]))
    return sum(len(s["spec"]["devices"]) for s in slices)


async def _create_all(kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
    api = AsyncClient(KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)
    writers = asyncio.Semaphore(_WRITERS)

    async def create(manifest: dict[str, Any]) -> None:
        async with writers:
            await api.create(from_dict(manifest))

    try:
        await asyncio.gather(*(create(m) for m in manifests))
    finally:
        await api.close()


def ready_nodes(kubeconfig: Path) -> int:
    """How many nodes report Ready=True and carry no not-ready taint (so the scheduler uses them)."""
    ready = 0
    for node in client(kubeconfig).list(Node, chunk_size=500):
        conditions = node.status.conditions if node.status and node.status.conditions else []
        taints = node.spec.taints if node.spec and node.spec.taints else []
        is_ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        if is_ready and not any(t.key.startswith("node.kubernetes.io/not-ready") for t in taints):
            ready += 1
    return ready


def has_default_service_account(kubeconfig: Path) -> bool:
    """Pods are refused until the controller-manager has made the ``default`` ServiceAccount."""
    try:
        client(kubeconfig).get(ServiceAccount, "default", namespace="default")
    except ApiError:
        return False
    return True
