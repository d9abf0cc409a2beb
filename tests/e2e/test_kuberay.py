"""KubeRay's own operator on the dev cluster, behind kapell's: TrainingJob -> RayJob -> RayCluster
-> pods on the capacity each group asked for, placed by the real scheduler with DRA claims.

Opt-in (``KAPELL_E2E_KUBERAY=1``), since it needs KubeRay's operator built from Go modules
(``make kuberay``: v1.5.0, the newest release the Go module proxy serves). The pods land on kwok
nodes, so no Ray process starts: Ray's workers find their head through cluster DNS and the
head's Service, which the dev cluster does not have (see docs/training.md, On Kubernetes).
Where Kueue gang admission is on, no Kueue controller runs here, so the test unsuspends the
RayJob as Kueue would on admission (a stand-in for Kueue, named as such).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeobjects import eventually
from lightkube import Client
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.resource_v1 import ResourceClaim
from operators import OperatorProcess, admit_as_kueue, apply

from kapell.api.kinds import CAPACITY_TYPE_LABEL
from kapell.backends.kubernetes.store import TrainingJobResource
from kapell.backends.kubernetes.training import RayJob
from kapell.devcluster import DevCluster, find_bin_dir
from kapell.net import free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("KAPELL_E2E_KUBERAY") != "1",
    reason="opt-in: KAPELL_E2E_KUBERAY=1 runs KubeRay's operator (build it with `make kuberay`)",
)
WAIT_S = 120.0


@pytest.fixture
def kuberay(
    dev_cluster: DevCluster, ecosystem_crds: list[str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    binary = find_bin_dir() / "kuberay-operator"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it with `make kuberay`")
    with (tmp_path / "kuberay.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(binary), f"--kubeconfig={dev_cluster.kubeconfig}",
             "--enable-leader-election=false", "--use-kubernetes-proxy",
             f"--metrics-addr=127.0.0.1:{free_port()}",
             f"--health-probe-bind-address=127.0.0.1:{free_port()}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def _pods(kube: Client, namespace: str) -> list[dict[str, Any]]:
    listed = kube.list(Pod, namespace=namespace, labels={"ray.io/is-ray-node": "yes"})
    return [p.to_dict() for p in listed]


def test_kuberay_places_the_head_on_demand_and_spot_workers_on_the_spot_node(
    kuberay: subprocess.Popen[bytes], operator: OperatorProcess, kubectl: Callable[..., str],
    kube: Client, namespace: str,
) -> None:  # fmt: skip
    pool = {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": "kwok", "namespace": namespace},
        "spec": {"nodes": [
            # kwok's nodes only: nothing starts, the placement is what is checked
            {"gpuModel": "H100", "count": 3,
             "nodeLabels": {"type": "kwok", CAPACITY_TYPE_LABEL: "on-demand"}},
            {"gpuModel": "H100", "count": 1, "spot": True,
             "nodeLabels": {"type": "kwok", CAPACITY_TYPE_LABEL: "spot"}},
        ]},
    }  # fmt: skip
    job = {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "rk", "namespace": namespace},
        "spec": {
            "entrypoint": "python -c 'print(1)'",
            "workerGroupSpecs": [{"groupName": "gpu", "replicas": 2, "spot": True,
                                  "resources": {"cpu": "1", "memory": "1Gi",
                                                "gpu": {"count": 1}}}],
        },
    }  # fmt: skip
    apply(kubectl, pool, job)
    rayjob = eventually(
        lambda: next(iter(kube.list(RayJob, namespace=namespace)), None), "the RayJob", WAIT_S
    ).to_dict()
    admit_as_kueue(kube, rayjob)

    def bound() -> list[dict[str, Any]] | None:
        pods = _pods(kube, namespace)
        placed = [p for p in pods if p["spec"].get("nodeName")]
        return pods if len(pods) == 3 and len(placed) == 3 else None

    pods = eventually(bound, "KubeRay's head and 2 workers bound to nodes", WAIT_S)
    capacity = {
        n.metadata.name: n.metadata.labels[CAPACITY_TYPE_LABEL] for n in kube.list(Node) if n.metadata
    }  # fmt: skip
    kinds = sorted((p["metadata"]["labels"]["ray.io/node-type"], capacity[p["spec"]["nodeName"]])
                   for p in pods)  # fmt: skip
    assert kinds == [("head", "on-demand"), ("worker", "spot"), ("worker", "spot")]
    claims = {c.metadata.name: c.to_dict() for c in kube.list(ResourceClaim, namespace=namespace)}
    for worker in (p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker"):
        [status] = worker["status"]["resourceClaimStatuses"]
        allocation = claims[status["resourceClaimName"]]["status"]["allocation"]
        [device] = allocation["devices"]["results"]
        assert device["pool"] == worker["spec"]["nodeName"]  # a GPU of the spot node itself
    # KubeRay's status reaches the TrainingJob (the cluster is up, Ray is not: kwok runs nothing).
    name = rayjob["metadata"]["name"]

    def kuberay_state_in_status() -> str | None:
        state = kube.get(RayJob, name, namespace=namespace).to_dict().get("status") or {}
        deployment = state.get("jobDeploymentStatus")
        job_status = kube.get(TrainingJobResource, "rk", namespace=namespace).to_dict()
        message = str((job_status.get("status") or {}).get("message", ""))
        return message if deployment and message.startswith(f"RayJob {name} {deployment}") else None

    said = eventually(kuberay_state_in_status, "KubeRay's state in the TrainingJob", WAIT_S)
    assert said.split()[2].split("/")[0] in ("Initializing", "Running"), said
    # Deleting the TrainingJob takes the RayJob and its cluster with it, while KubeRay runs to
    # finish its RayJob finalizer.
    kube.delete(TrainingJobResource, "rk", namespace=namespace)
    eventually(
        lambda: True if not list(kube.list(RayJob, namespace=namespace)) else None,
        "the RayJob gone with its TrainingJob", WAIT_S,
    )  # fmt: skip
