"""The node agent: the kubelet of a dev cluster's serving nodes.

``python -m kapell.devcluster.agent --kubeconfig K --state-dir S --nodes gpu-node-0000,...``
(``kapell dev cluster up --serving-nodes N`` starts it). It

* claims a /24 of the pod network per node (``podnet``) and writes it to ``spec.podCIDR``;
* keeps its nodes Ready (``nodeheart``);
* watches the pods bound to each node (one watch per node, resumed from the last
  resourceVersion after an error, relisted after ``410 Gone``) and runs each pod with a
  ``PodWorker``: processes in a network namespace, GPUs from DRA claims, kubelet-style status;
* on start, removes what an earlier agent of this cluster left (``agentstate``); on SIGTERM,
  stops every pod's processes and removes their namespaces, its Leases and its CIDR locks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on (its errors)
from lightkube import ALL_NS, ApiError, AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType

from kapell.api.errors import BackendError
from kapell.devcluster import agentstate, podnet
from kapell.devcluster.agentstate import AgentState
from kapell.devcluster.apiproxy import SERVICE_URL, ApiServerProxy
from kapell.devcluster.container import Backoff
from kapell.devcluster.nodeheart import Heartbeat
from kapell.devcluster.podtoken import api_cluster
from kapell.devcluster.podworker import NodeNet, PodWorker, Runtime

log = logging.getLogger("kapell.devcluster.agent")

FIELD_MANAGER = "kapell-node-agent"
SHUTDOWN_GRACE_S = 5.0  # per pod when the agent stops; `down` waits 10 s for the agent
RETRY_S = 1.0


class Agent:
    def __init__(self, runtime: Runtime, nodes: list[str]) -> None:
        self.rt = runtime
        self.node_names = nodes
        self.workers: dict[str, PodWorker] = {}

    async def claim_networks(self, owner: str) -> list[podnet.CidrLock]:
        """One node CIDR per node: the one in ``spec.podCIDR`` if set, else the first free."""
        locks = []
        for name in self.node_names:
            node = await self.rt.client.get(Node, name)
            existing = node.spec.podCIDR if node.spec else None
            if existing:
                lock = podnet.lock_cidr(ipaddress.IPv4Network(existing), owner)
                if lock is None:
                    raise BackendError(
                        f"{name}: its pod CIDR {existing} is held by another running agent"
                    )
            else:
                lock = podnet.lock_free_cidr(owner)
                cidr = str(lock.cidr)
                await self.rt.client.patch(
                    Node, name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}},
                    patch_type=PatchType.MERGE,
                )  # fmt: skip
            locks.append(lock)
            stale = await asyncio.to_thread(podnet.clear_routes, lock.cidr)
            if stale:
                log.info("%s: removed stale routes %s", name, ", ".join(stale))
            await asyncio.to_thread(podnet.fence, lock.cidr)
            self.rt.nodes[name] = NodeNet(name, lock.cidr)
            log.info("%s: pod CIDR %s", name, lock.cidr)
        return locks

    def observe(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.vanish()
            return
        if worker is not None:
            worker.update(pod)
            return
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if terminal and not pod["metadata"].get("deletionTimestamp"):
            return  # nothing runs, nothing to do until it is deleted
        worker = PodWorker(self.rt, pod)
        self.workers[uid] = worker
        worker.task.add_done_callback(lambda _: self._forget(uid, worker))

    def _forget(self, uid: str, worker: PodWorker) -> None:
        if self.workers.get(uid) is worker:
            del self.workers[uid]

    async def _relist(self, node: str) -> str:
        pods = self.rt.client.list(Pod, namespace=ALL_NS, fields={"spec.nodeName": node})
        seen = set()
        async for pod in pods:
            manifest = pod.to_dict()
            seen.add(manifest["metadata"]["uid"])
            self.observe("MODIFIED", manifest)
        for uid, worker in list(self.workers.items()):
            if worker.node == node and uid not in seen:
                worker.vanish()
        return pods.resourceVersion

    async def watch(self, node: str) -> None:
        """Follow the pods bound to ``node`` until cancelled."""
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._relist(node)
                events = self.rt.client.watch(
                    Pod, namespace=ALL_NS, fields={"spec.nodeName": node}, resource_version=version
                )
                async for kind, pod in events:
                    manifest = pod.to_dict()
                    version = manifest["metadata"]["resourceVersion"]
                    self.observe(kind, manifest)
            except ApiError as exc:
                if exc.status.code == 410:
                    log.info("%s: watch expired (410 Gone), relisting", node)
                    version = None
                    continue
                log.warning("%s: watch failed: %s", node, exc)
                await asyncio.sleep(RETRY_S)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("%s: watch interrupted: %s", node, exc)
                await asyncio.sleep(RETRY_S)

    async def stop_pods(self) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            worker.stop(SHUTDOWN_GRACE_S)
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    state_dir = args.state_dir.resolve()
    left = await asyncio.to_thread(agentstate.clean_up, state_dir)
    if left:
        log.info("removed what an earlier agent left for %s", ", ".join(left))
    client = AsyncClient(KubeConfig.from_file(args.kubeconfig), field_manager=FIELD_MANAGER)
    cluster = api_cluster(args.kubeconfig)
    apiserver = urllib.parse.urlsplit(cluster["server"])
    proxy = ApiServerProxy(apiserver.hostname or "127.0.0.1", apiserver.port or 443)
    await proxy.start()
    runtime = Runtime(
        client=client,
        state=AgentState(state_dir),
        nodes={},
        logs=state_dir / "logs" / "pods",
        image_env=dict(os.environ),
        host_ip=args.host_ip,
        python=sys.executable,
        ip_binary=shutil.which("ip") or "ip",
        backoff=Backoff(args.backoff_base_s, args.backoff_cap_s),
        grace_cap_s=args.grace_cap_s,
        api_cluster={**cluster, "server": SERVICE_URL},
        credentials=state_dir / "pod-credentials",
    )
    nodes = [n for n in args.nodes.split(",") if n]
    agent = Agent(runtime, nodes)
    heartbeat = Heartbeat(client, nodes, args.host_ip)
    locks = await agent.claim_networks(f"{state_dir} pid {os.getpid()}")
    tasks = [asyncio.create_task(heartbeat.run())]
    tasks += [asyncio.create_task(agent.watch(n)) for n in nodes]
    log.info("serving nodes %s", ", ".join(nodes))
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.stop_pods()
        await proxy.stop()
        with contextlib.suppress(Exception):
            await heartbeat.remove_leases()
        for lock in locks:
            podnet.unfence(lock.cidr)
            lock.release()
        await client.close()
        log.info("stopped")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kapell.devcluster.agent", description=__doc__)
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True, help="the dev cluster's state dir")
    p.add_argument("--nodes", required=True, help="comma-separated names of the nodes to serve")
    p.add_argument("--host-ip", default="127.0.0.1", help="the nodes' InternalIP and hostIP")
    p.add_argument("--backoff-base-s", type=float, default=10.0, help="first crash back-off")
    p.add_argument("--backoff-cap-s", type=float, default=300.0, help="longest crash back-off")
    p.add_argument("--grace-cap-s", type=float, default=30.0, help="longest termination grace")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    why_not = podnet.can_manage()
    if why_not:
        print(f"kapell node agent: {why_not}", file=sys.stderr)
        return 1

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
