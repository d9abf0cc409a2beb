"""Serving nodes: kapell's node agent really runs pods, as a kubelet would.

An engine pod with a GPU claim becomes Ready on a pod IP the host reaches, answers the official
``openai`` client, sees its allocated GPU's UUID, and leaves nothing behind once deleted. Pods
it cannot run get the kubelet's reasons.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import openai
import pytest
from kubeobjects import eventually, published_devices
from lightkube import ApiError, Client
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.resource_v1 import ResourceClaim

from kapell.api.images import KAPELL_IMAGE
from kapell.devcluster.gpus import SERVING_LABEL
from kapell.devcluster.processes import Started, is_alive, start_ticks

WAIT_S = 120.0  # two cores shared with the control plane: an engine takes seconds to start


def gpu_claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [
            {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}
        ]}},
    }  # fmt: skip


def engine_pod(
    name: str, claim: str | None, command: list[str], **container: Any
) -> dict[str, Any]:
    """A pod for a serving node running the engine image, using ``claim`` if given."""
    spec: dict[str, Any] = {
        "nodeSelector": {SERVING_LABEL: "true"},
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "engine", "image": KAPELL_IMAGE, "command": command, **container}],
    }
    if claim:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim}]
        spec["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


SIM = ["python", "-m", "kapell.engines.sim", "--model", "h100-llama3-8b", "--served-name", "m",
       "--host", "0.0.0.0", "--port", "8000", "--cold-start-s", "1"]  # fmt: skip
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


def condition(pod: Pod, type_: str) -> str | None:
    for c in (pod.status.conditions or []) if pod.status else []:
        if c.type == type_:
            return str(c.status)
    return None


def ready_pod(kube: Client, namespace: str, name: str) -> Pod:
    def probe() -> Pod | None:
        pod = kube.get(Pod, name, namespace=namespace)
        return pod if condition(pod, "Ready") == "True" else None

    return eventually(probe, f"pod {namespace}/{name} Ready", WAIT_S)


def pid_of(pod: Pod) -> int:
    [status] = pod.status.containerStatuses
    return int(status.containerID.removeprefix("kapell-dev://"))


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def netns_of(pid: int) -> str:
    """The name of the network namespace ``pid`` runs in, by inode, as ``ip netns identify``."""
    inode = Path(f"/proc/{pid}/ns/net").stat().st_ino
    for entry in Path("/run/netns").iterdir():
        if entry.stat().st_ino == inode:
            return entry.name
    return ""


def gone(kube: Client, namespace: str, name: str) -> bool:
    try:
        kube.get(Pod, name, namespace=namespace)
    except ApiError as exc:
        return exc.status.code == 404
    return False


def test_engine_pod_runs_for_real_with_its_gpu_and_is_gone_when_deleted(
    kube: Client, namespace: str
) -> None:
    kube.create(from_dict(gpu_claim("one-gpu")), namespace=namespace)
    manifest = engine_pod(
        "engine", "one-gpu", SIM,
        ports=[{"name": "http", "containerPort": 8000}],
        readinessProbe={"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
    )  # fmt: skip
    kube.create(from_dict(manifest), namespace=namespace)

    pod = ready_pod(kube, namespace, "engine")
    assert pod.status.phase == "Running"
    node = kube.get(Node, pod.spec.nodeName)
    assert node.metadata.labels[SERVING_LABEL] == "true"
    ip = ipaddress.ip_address(pod.status.podIP)
    assert not ip.is_loopback
    assert ip in ipaddress.ip_network(node.spec.podCIDR)
    assert [a.ip for a in pod.status.podIPs] == [str(ip)]
    assert pod.status.hostIP and pod.status.startTime
    assert {condition(pod, t) for t in ("PodScheduled", "Initialized", "ContainersReady")} == {
        "True"
    }
    [status] = pod.status.containerStatuses
    assert (status.ready, status.restartCount) == (True, 0) and status.state.running

    client = openai.OpenAI(base_url=f"http://{ip}:8000/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="m", prompt="Hello", max_tokens=4)
    assert completion.choices[0].text and completion.usage.completion_tokens == 4

    [result] = kube.get(
        ResourceClaim, "one-gpu", namespace=namespace
    ).status.allocation.devices.results
    allocated = published_devices(kube)[(result.pool, result.device)]
    assert allocated["node"] == pod.spec.nodeName
    pid = pid_of(pod)
    env = environ(pid)
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == allocated["uuid"]
    netns = netns_of(pid)
    assert netns == f"kapell-{pod.metadata.uid}"
    ticks = start_ticks(pid)

    kube.delete(Pod, "engine", namespace=namespace)
    eventually(lambda: True if gone(kube, namespace, "engine") else None, "pod engine gone", 60)
    assert ticks is not None and not is_alive(Started("", pid, ticks)), (
        "the engine outlived its pod"
    )
    assert not (Path("/run/netns") / netns).exists()
    with pytest.raises(openai.APIConnectionError):
        client.with_options(timeout=2.0).models.list()


def test_pods_sharing_a_claim_see_the_same_gpu(kube: Client, namespace: str) -> None:
    kube.create(from_dict(gpu_claim("shared")), namespace=namespace)
    for name in ("share-a", "share-b"):
        kube.create(from_dict(engine_pod(name, "shared", SLEEP)), namespace=namespace)
    pods = [ready_pod(kube, namespace, name) for name in ("share-a", "share-b")]
    [result] = kube.get(
        ResourceClaim, "shared", namespace=namespace
    ).status.allocation.devices.results
    uuid = published_devices(kube)[(result.pool, result.device)]["uuid"]
    assert [environ(pid_of(p))["NVIDIA_VISIBLE_DEVICES"] for p in pods] == [uuid, uuid]
    assert pods[0].status.podIP != pods[1].status.podIP


def test_crashing_container_is_restarted_with_back_off(kube: Client, namespace: str) -> None:
    crash = ["python", "-c", "import sys; print('bye', flush=True); sys.exit(3)"]
    kube.create(from_dict(engine_pod("crasher", None, crash)), namespace=namespace)

    def restarted() -> Any:
        pod = kube.get(Pod, "crasher", namespace=namespace)
        statuses = pod.status.containerStatuses or [] if pod.status else []
        return pod if statuses and statuses[0].restartCount >= 1 else None

    pod = eventually(restarted, "a restart of pod crasher", WAIT_S)
    [status] = pod.status.containerStatuses
    assert status.lastState.terminated.exitCode == 3
    assert not status.ready and condition(pod, "Ready") == "False"
    assert pod.status.phase == "Running"  # restartPolicy Always: it comes back


def test_other_images_get_the_kubelets_reason_and_still_delete(
    kube: Client, namespace: str
) -> None:
    manifest = engine_pod("foreign", None, ["sleep", "600"])
    manifest["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.11.0"
    kube.create(from_dict(manifest), namespace=namespace)

    def waiting() -> Any:
        pod = kube.get(Pod, "foreign", namespace=namespace)
        statuses = pod.status.containerStatuses or [] if pod.status else []
        return statuses[0].state.waiting if statuses and statuses[0].state.waiting else None

    reason = eventually(waiting, "a waiting reason on pod foreign")
    assert reason.reason == "ErrImageNeverPull"
    assert "vllm/vllm-openai:v0.11.0" in reason.message and KAPELL_IMAGE in reason.message
    pod = kube.get(Pod, "foreign", namespace=namespace)
    assert pod.status.phase == "Pending" and condition(pod, "Ready") == "False"
    kube.delete(Pod, "foreign", namespace=namespace)
    eventually(lambda: True if gone(kube, namespace, "foreign") else None, "pod foreign gone")


LIST_PODS = ["python", "-c", (
    "from lightkube import Client; from lightkube.resources.core_v1 import Pod; "
    "print(len(list(Client().list(Pod))))"
)]  # fmt: skip


def exit_code(kube: Client, namespace: str, name: str) -> int:
    def probe() -> int | None:
        pod = kube.get(Pod, name, namespace=namespace)
        for status in (pod.status.containerStatuses or []) if pod.status else []:
            if status.state and status.state.terminated:
                return int(status.state.terminated.exitCode)
        return None

    return eventually(probe, f"pod {namespace}/{name} finished", WAIT_S)


def test_a_pod_acts_as_its_service_account_with_exactly_its_rbac(
    kube: Client, namespace: str
) -> None:
    """The agent gives a pod its ServiceAccount's bound token (``KUBECONFIG``), as a kubelet's
    projected token: listing pods is refused until a Role allows it to that account."""
    for name, account in (("refused", "default"), ("allowed", "lister")):
        if account != "default":
            kube.create(from_dict({"apiVersion": "v1", "kind": "ServiceAccount",
                                   "metadata": {"name": account}}), namespace=namespace)  # fmt: skip
            kube.create(from_dict({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "list-pods"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
            }), namespace=namespace)  # fmt: skip
            kube.create(from_dict({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "lister"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "list-pods"},
                "subjects": [{"kind": "ServiceAccount", "name": account}],
            }), namespace=namespace)  # fmt: skip
        pod = engine_pod(name, None, LIST_PODS)
        pod["spec"].update(restartPolicy="Never", serviceAccountName=account)
        kube.create(from_dict(pod), namespace=namespace)
    assert exit_code(kube, namespace, "refused") != 0
    assert exit_code(kube, namespace, "allowed") == 0
