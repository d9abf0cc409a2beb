"""Run ``kapell operator`` as a real process against the e2e cluster, and read what it made."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeobjects import eventually
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod
from lightkube.resources.resource_v1 import ResourceClaim
from lightkube.types import PatchType

from kapell.backends.kubernetes.store import ModelResource
from kapell.backends.kubernetes.training import RayJob

KAPELL = Path(sys.executable).with_name("kapell")
LEASE_S = 4  # short, so a killed leader is replaced within seconds
MODEL_WAIT_S = 90.0


@dataclass
class OperatorProcess:
    """One ``kapell operator`` candidate, logging to a file the test can read."""

    kubeconfig: Path
    log: Path
    identity: str
    port: int = 0  # the operator's HTTP endpoint (probes, metrics, demand); 0: none
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(KAPELL), "operator", f"--kubeconfig={self.kubeconfig}",
                 f"--identity={self.identity}", f"--lease-duration={LEASE_S}",
                 f"--port={self.port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_watching(self, timeout_s: float = 60.0) -> None:
        marker = f"kapell operator {self.identity}: watching"
        eventually(
            lambda: True if marker in self.text() else None, f"{self.identity} leading", timeout_s
        )

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def model(name: str, namespace: str, gpu: dict[str, Any] | None = None, replicas: int = 1,
          engine: str = "sim", uri: str = "h100-llama3-8b", args: list[str] | None = None,
          cpu: str = "100m", memory: str = "128Mi") -> dict[str, Any]:  # fmt: skip
    resources: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpu is not None:
        resources["gpu"] = gpu
    return {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"uri": uri},
            "engine": {"name": engine, "args": args or []},
            "resources": resources,
            "scaling": {"minReplicas": replicas, "maxReplicas": max(replicas, 1)},
            "nodeSelector": {"type": "kwok"},  # kwok's nodes run nothing: cheap replicas
        },
    }


def apply(kubectl: Any, *manifests: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", stdin=json.dumps(body))


def status(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    try:
        found = kube.get(ModelResource, name, namespace=namespace)
    except ApiError:
        return {}
    return dict(found.get("status") or {})


def condition(kube: Client, name: str, namespace: str, type_: str) -> dict[str, Any]:
    conditions = status(kube, name, namespace).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def wait_ready(kube: Client, name: str, namespace: str, replicas: int = 1) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = status(kube, name, namespace)
        return found if found.get("readyReplicas") == replicas else None

    return eventually(probe, f"Model {namespace}/{name} with {replicas} ready", MODEL_WAIT_S)


def node_ready(kubectl: Any, node: str) -> bool:
    """Whether the Node's Ready condition is True."""
    jsonpath = "{.status.conditions[?(@.type=='Ready')].status}"
    return bool(kubectl("get", "node", node, "-o", f"jsonpath={jsonpath}").strip() == "True")


def pods_of(kube: Client, namespace: str, model_name: str | None = None) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/managed-by": "kapell"}
    if model_name is not None:
        labels["kapell.dev/model"] = model_name
    return [p.to_dict() for p in kube.list(Pod, namespace=namespace, labels=labels)]


def claims_in(kube: Client, namespace: str) -> list[dict[str, Any]]:
    return [c.to_dict() for c in kube.list(ResourceClaim, namespace=namespace)]


def admit_as_kueue(kube: Client, rayjob: dict[str, Any]) -> None:
    """Admit a RayJob the operator created suspended for Kueue (a stand-in: Kueue does not
    run here), as Kueue does: by unsuspending it."""
    if rayjob["spec"]["suspend"]:
        meta = rayjob["metadata"]
        kube.patch(RayJob, meta["name"], {"spec": {"suspend": False}},
                   namespace=meta["namespace"], patch_type=PatchType.MERGE)  # fmt: skip


def as_kuberay(kube: Client, name: str, namespace: str, deployment: str, job: str) -> None:
    """Write the status KubeRay's operator would (a stand-in: KubeRay does not run here)."""
    status = {"jobDeploymentStatus": deployment, "jobStatus": job, "jobId": f"{name}-id",
              "message": f"stand-in for KubeRay: {deployment}/{job}"}  # fmt: skip
    kube.patch(RayJob.Status, name, {"status": status}, namespace=namespace,
               patch_type=PatchType.MERGE)  # fmt: skip
