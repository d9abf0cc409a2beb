"""One pod on a serving node, from binding to deletion, as a kubelet's pod worker.

Start: refuse images other than kapell's image (``ErrImageNeverPull``), make the pod's
network, read what its containers need from the API (ResourceClaims and the node's
ResourceSlice for the GPU variables, ConfigMaps and Secrets for env), then start a
:class:`ContainerRunner` per container. Whatever is missing is retried with back-off while the
container waits with the kubelet's reason. Every change is written as pod status.

Stop: when the pod gets a ``deletionTimestamp``, SIGTERM, SIGKILL after the grace period, remove
the network, and delete the pod for good (grace 0), as a kubelet finishing a deletion does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret
from lightkube.resources.resource_v1 import ResourceClaim, ResourceSlice
from lightkube.types import PatchType

from kapell.api.nvidia_dra import DRIVER
from kapell.devcluster import podnet
from kapell.devcluster.agentstate import AgentState, PodRecord
from kapell.devcluster.container import Backoff, ContainerRunner, Launch, now
from kapell.devcluster.podclaims import device_env, device_uuids, pod_claim_names
from kapell.devcluster.podspec import (
    Sources,
    StartError,
    Unrunnable,
    check_image,
    parse_probe,
    referenced_sources,
    render_env,
    resolve_argv,
    termination_grace_s,
)
from kapell.devcluster.podstatus import ContainerObservation, PodObservation, Waiting, render
from kapell.devcluster.podtoken import wants_token, write_kubeconfig
from kapell.devcluster.processes import start_ticks

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass
class NodeNet:
    """A serving node's share of the pod network."""

    name: str
    cidr: ipaddress.IPv4Network
    last_ip: ipaddress.IPv4Address | None = None

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return podnet.gateway(self.cidr)


@dataclass
class Runtime:
    """What every pod worker of one agent shares."""

    client: AsyncClient
    state: AgentState
    nodes: dict[str, NodeNet]
    logs: Path  # <state-dir>/logs/pods
    image_env: Mapping[str, str]
    host_ip: str = "127.0.0.1"
    python: str = sys.executable
    ip_binary: str = "ip"
    backoff: Backoff = field(default_factory=Backoff)
    grace_cap_s: float = 30.0
    api_cluster: Mapping[str, Any] | None = None
    """The apiserver (server, CA) pods reach with their ServiceAccount's token; None: no
    credentials are given to pods."""
    credentials: Path | None = None  # <state-dir>/pod-credentials: one kubeconfig per pod


class PodWorker:
    def __init__(self, runtime: Runtime, pod: Json) -> None:
        self.rt = runtime
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.node: str = pod["spec"]["nodeName"]
        self.describe = f"{self.name}_{self.namespace}({self.uid})"
        self.obs = PodObservation(
            [
                ContainerObservation(c["name"], c.get("image", ""), restart_count=_restarts(pod, c))
                for c in pod["spec"]["containers"]
            ],
            host_ip=runtime.host_ip,
            start_time=(pod.get("status") or {}).get("startTime") or now(),
        )
        self._runners: list[ContainerRunner] = []
        self._stop = asyncio.Event()
        self._dirty = asyncio.Event()
        self._grace_s = runtime.grace_cap_s
        self._finish_deletion = False
        self._vanished = False
        self._record: PodRecord | None = None
        self.update(pod)
        self.task = asyncio.create_task(self._run(), name=f"pod {self.describe}")

    # -- what the agent tells the worker --------------------------------------------------------

    def update(self, pod: Json) -> None:
        """The latest version of the pod, from the watch."""
        self.pod = pod
        self._dirty.set()
        if pod["metadata"].get("deletionTimestamp") and not self._finish_deletion:
            self._finish_deletion = True
            self.stop(termination_grace_s(pod, self.rt.grace_cap_s))

    def vanish(self) -> None:
        """The pod is gone from the API (deleted with grace 0 by someone): stop at once."""
        self._vanished = True
        self.stop(0.0)

    def stop(self, grace_s: float) -> None:
        self._grace_s = min(self._grace_s, grace_s)
        self._stop.set()

    # -- the worker -----------------------------------------------------------------------------

    async def _run(self) -> None:
        writer = asyncio.create_task(self._write_status())
        try:
            if not self._stop.is_set():
                await self._start()
            await self._stop.wait()
        except Exception as exc:  # a pod must never take the agent down
            log.exception("%s: cannot run", self.describe)
            for c in self.obs.containers:
                c.state = Waiting("RunContainerError", f"node agent: {exc}")
            self._dirty.set()
            await self._stop.wait()
        finally:
            await self._shut_down()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _start(self) -> None:
        spec = self.pod["spec"]
        runnable = []
        for container, obs in zip(spec["containers"], self.obs.containers, strict=True):
            try:
                if spec.get("initContainers"):
                    raise Unrunnable(
                        "CreateContainerConfigError",
                        "init containers are not supported on kapell dev serving nodes",
                    )
                check_image(container)
                runnable.append((container, obs))
            except Unrunnable as exc:
                obs.state = Waiting(exc.reason, exc.message)
                log.info("%s %s: %s", self.describe, container["name"], exc.message)
        self._dirty.set()
        if not runnable:
            return
        await self._make_network()
        delay = 1.0
        while runnable and not self._stop.is_set():
            waiting = []
            try:
                inputs = await self._read_inputs([c for c, _ in runnable])
            except ApiError as exc:
                log.warning("%s: reading claims/config failed: %s", self.describe, exc)
                waiting = runnable
            else:
                for container, obs in runnable:
                    try:
                        launch = self._launch(container, *inputs)
                    except Unrunnable as exc:
                        obs.state = Waiting(exc.reason, exc.message)
                        waiting.append((container, obs))
                        continue
                    runner = ContainerRunner(
                        launch, obs, self.rt.backoff, self._dirty.set, self._note_process
                    )
                    self._runners.append(runner)
            self._dirty.set()
            runnable = waiting
            if runnable:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 30.0)

    async def _make_network(self) -> None:
        spec, node = self.pod["spec"], self.rt.nodes[self.node]
        record = PodRecord(self.uid, self.namespace, self.name, self.node)
        if spec.get("hostNetwork"):
            self.obs.pod_ip = self.rt.host_ip
        else:
            used = {ipaddress.IPv4Address(ip) for ip in self.rt.state.used_ips()}
            previous = (self.pod.get("status") or {}).get("podIP", "")
            kept = ipaddress.IPv4Address(previous) if previous else None
            if kept is not None and kept in node.cidr and kept not in used:
                ip = kept  # the agent restarted: the pod keeps its address
            else:
                ip = podnet.pick_ip(node.cidr, used, node.last_ip)
            node.last_ip = ip
            record.ip = str(ip)
            record.netns, record.veth = podnet.netns_name(self.uid), podnet.veth_name(self.uid)
        self._record = record
        self.rt.state.pods[self.uid] = record
        self.rt.state.save()  # before making anything, so a crash leaves nothing unrecorded
        if record.ip:
            await asyncio.to_thread(
                podnet.create, self.uid, ipaddress.IPv4Address(record.ip), node.gateway
            )
            self.obs.pod_ip = record.ip
        self.obs.sandbox_ready = True
        self._dirty.set()

    async def _read_inputs(
        self, containers: list[Json]
    ) -> tuple[Sources, dict[str, Json], list[Json], Path | None]:
        client, ns = self.rt.client, self.namespace
        kubeconfig = None
        if self.rt.api_cluster is not None and self.rt.credentials and wants_token(self.pod):
            path = self.rt.credentials / self.uid / "kubeconfig"
            kubeconfig = await write_kubeconfig(client, self.pod, self.rt.api_cluster, path)
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for container in containers:
            cm_names, secret_names = referenced_sources(container)
            for name in cm_names - config_maps.keys():
                with _absent_on_404():
                    found = (await client.get(ConfigMap, name, namespace=ns)).data or {}
                    config_maps[name] = dict(found)
            for name in secret_names - secrets.keys():
                with _absent_on_404():
                    data = (await client.get(Secret, name, namespace=ns)).data or {}
                    secrets[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        claims: dict[str, Json] = {}
        for claim_name in pod_claim_names(self.pod).values():
            if claim_name:
                with _absent_on_404():
                    claim = await client.get(ResourceClaim, claim_name, namespace=ns)
                    claims[claim_name] = claim.to_dict()
        slices: list[Json] = []
        if claims:
            listed = client.list(
                ResourceSlice, fields={"spec.nodeName": self.node, "spec.driver": DRIVER}
            )
            slices = [s.to_dict() async for s in listed]
        return Sources(config_maps, secrets), claims, slices, kubeconfig

    def _launch(
        self,
        container: Json,
        sources: Sources,
        claims: dict[str, Json],
        slices: list[Json],
        kubeconfig: Path | None,
    ) -> Launch:
        uuids = device_uuids(self.pod, container, claims, slices)
        env = render_env(
            self.pod, container, image_env=self.rt.image_env, sources=sources,
            pod_ip=self.obs.pod_ip, host_ip=self.rt.host_ip, devices=device_env(uuids),
        )  # fmt: skip
        if kubeconfig is not None:  # where a kubelet's projected token would be
            env.setdefault("KUBECONFIG", str(kubeconfig))
        start_error, argv = "", []
        try:
            argv = resolve_argv(container, env, self.rt.python)
        except StartError as exc:
            start_error = str(exc)
        record = self._record
        in_netns = (
            (self.rt.ip_binary, "netns", "exec", record.netns) if record and record.netns else ()
        )
        return Launch(
            name=container["name"],
            argv=tuple(argv),
            env=env,
            cwd=container.get("workingDir") or "/",
            log_path=self.rt.logs / f"{self.namespace}_{self.name}" / f"{container['name']}.log",
            pod=self.describe,
            pod_ip=self.obs.pod_ip,
            in_netns=in_netns,
            start_error=start_error,
            restart_policy=self.pod["spec"].get("restartPolicy", "Always"),
            grace_s=termination_grace_s(self.pod, self.rt.grace_cap_s),
            readiness=parse_probe(container.get("readinessProbe"), container),
            liveness=parse_probe(container.get("livenessProbe"), container),
            startup=parse_probe(container.get("startupProbe"), container),
            python=self.rt.python,
        )

    def _note_process(self, container: str, pid: int | None) -> None:
        record = self._record
        if record is None:
            return
        ticks = start_ticks(pid) if pid is not None else None
        if pid is None or ticks is None:
            record.processes.pop(container, None)
        else:
            record.processes[container] = (pid, ticks)
        self.rt.state.save()

    async def _write_status(self) -> None:
        client, last = self.rt.client, None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            status = render(self.pod, self.obs, now())
            if status != last:
                try:
                    await client.patch(
                        Pod.Status, self.name, {"status": status}, namespace=self.namespace,
                        patch_type=PatchType.MERGE,
                    )  # fmt: skip
                    last = status
                except ApiError as exc:
                    if exc.status.code == 404:
                        return
                    log.warning("%s: status update failed: %s", self.describe, exc)
                    await asyncio.sleep(1.0)
                    self._dirty.set()
            await asyncio.sleep(0.05)  # let a burst of changes go out as one write

    async def _shut_down(self) -> None:
        await asyncio.gather(*(r.stop(self._grace_s) for r in self._runners))
        record = self._record
        if record is not None:
            if record.netns:
                await asyncio.to_thread(podnet.delete, record.netns, record.veth)
            self.rt.state.pods.pop(self.uid, None)
            self.rt.state.save()
        if self.rt.credentials is not None:
            shutil.rmtree(self.rt.credentials / self.uid, ignore_errors=True)
        if self._finish_deletion and not self._vanished:
            await self._delete_for_good()
        log.info("%s: stopped", self.describe)

    async def _delete_for_good(self) -> None:
        client = self.rt.client
        with _absent_on_404():
            current = await client.get(Pod, self.name, namespace=self.namespace)
            if current.metadata and current.metadata.uid == self.uid:
                await client.delete(Pod, self.name, namespace=self.namespace, grace_period=0)


def _restarts(pod: Json, container: Json) -> int:
    """The restart count to continue from: a container that ran under an earlier agent counts
    its start here as one more restart."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == container["name"]:
            ran = {"running", "terminated"} & set(status.get("state") or {})
            return int(status.get("restartCount", 0)) + bool(ran)
    return 0


@contextlib.contextmanager
def _absent_on_404() -> Any:
    try:
        yield
    except ApiError as exc:
        if exc.status.code != 404:
            raise
