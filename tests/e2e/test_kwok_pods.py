"""kwok's pods behave like a kubelet's where kapell's benchmarks depend on it."""

from __future__ import annotations

from kubeobjects import busybox_pod, eventually
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType


def _ready(pod: Pod) -> str | None:
    conditions = (pod.status.conditions if pod.status else None) or []
    return next((c.status for c in conditions if c.type == "Ready"), None)


def test_a_pod_marked_not_ready_by_the_node_controller_turns_ready_again(
    kube: Client, namespace: str
) -> None:
    """kube-controller-manager marks every pod of a node that missed its heartbeat not Ready; a
    kubelet's status sync then reports Ready again. Without that, a pod whose kwok node was
    NotReady for a moment stayed not Ready for good (a 10,000-pod benchmark stalled on it)."""
    kube.create(from_dict(busybox_pod("flapped", {})), namespace=namespace)
    eventually(
        lambda: _ready(kube.get(Pod, "flapped", namespace=namespace)) == "True" or None,
        "pod Ready",
    )

    patch = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NodeLost"}]}}
    kube.patch(Pod.Status, "flapped", patch, namespace=namespace, patch_type=PatchType.STRATEGIC)
    assert _ready(kube.get(Pod, "flapped", namespace=namespace)) == "False"

    eventually(
        lambda: _ready(kube.get(Pod, "flapped", namespace=namespace)) == "True" or None,
        "pod Ready again",
    )
