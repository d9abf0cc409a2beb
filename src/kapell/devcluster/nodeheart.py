"""A serving node's heartbeat, as a kubelet keeps it: a Lease renewed in ``kube-node-lease``
and node status with the Ready condition.

The node lifecycle controller in kube-controller-manager marks a node NotReady (and taints it)
when its Lease is not renewed within the grace period; renewing every 10 s with a 40 s lease is
what a kubelet does. Node status is written at start and every minute, with
``lastHeartbeatTime``; conditions keep their ``lastTransitionTime`` from the agent's start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.codecs import from_dict
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_S = 40
RENEW_S = 10.0
STATUS_EVERY_S = 60.0
AGENT_VERSION = "kapell-node-agent"


def _time(moment: dt.datetime, micro: bool = False) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node_status(node: str, host_ip: str, since: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """The ``status`` fields a kubelet owns, for a healthy node."""

    def condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": _time(now), "lastTransitionTime": _time(since),
        }  # fmt: skip

    info = {
        key: AGENT_VERSION
        for key in ("kubeletVersion", "kubeProxyVersion", "containerRuntimeVersion", "osImage")
    }
    return {
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kapell node agent"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kapell node agent"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kapell node agent"),
            condition("Ready", "True", "KubeletReady", "kapell node agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": node},
        ],
        "nodeInfo": {
            **info,
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kernelVersion": "",
            "bootID": "",
            "machineID": "",
            "systemUUID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }


class Heartbeat:
    def __init__(self, client: AsyncClient, nodes: list[str], host_ip: str) -> None:
        self._client = client
        self._nodes = nodes
        self._host_ip = host_ip
        self._since = dt.datetime.now(dt.UTC)

    async def beat_once(self, with_status: bool) -> None:
        now = dt.datetime.now(dt.UTC)
        for node in self._nodes:
            if with_status:
                status = node_status(node, self._host_ip, self._since, now)
                await self._client.patch(
                    Node.Status, node, {"status": status}, patch_type=PatchType.MERGE
                )
            await self._renew(node, now)

    async def _renew(self, node: str, now: dt.datetime) -> None:
        spec = {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_S,
            "renewTime": _time(now, True),
        }
        try:
            await self._client.patch(
                Lease, node, {"spec": spec}, namespace=LEASE_NAMESPACE, patch_type=PatchType.MERGE
            )
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            owner = await self._client.get(Node, node)
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": node,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": node,
                        "uid": owner.metadata.uid if owner.metadata else "",
                    }],
                },
                "spec": spec,
            }  # fmt: skip
            await self._client.create(cast(Lease, from_dict(lease)))

    async def run(self) -> None:
        """Beat until cancelled; a failed beat is logged and retried at the next tick."""
        last_status = -STATUS_EVERY_S
        loop = asyncio.get_running_loop()
        while True:
            with_status = loop.time() - last_status >= STATUS_EVERY_S
            try:
                await self.beat_once(with_status)
                if with_status:
                    last_status = loop.time()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(RENEW_S)

    async def remove_leases(self) -> None:
        for node in self._nodes:
            try:
                await self._client.delete(Lease, node, namespace=LEASE_NAMESPACE)
            except ApiError as exc:
                if exc.status.code != 404:
                    log.warning("cannot delete lease %s: %s", node, exc)
