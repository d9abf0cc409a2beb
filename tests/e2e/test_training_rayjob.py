"""TrainingJobs as KubeRay RayJobs on the real apiserver, with the upstream CRDs installed.

The first test sends every object the renderer makes (RayJob, ResourceClaimTemplates, Volcano
PodGroup, Kueue ResourceFlavors, ClusterQueue and LocalQueue) and reads each back unpruned. The
second runs ``kapell operator``: a TrainingJob becomes a RayJob owned by it, and the RayJob's
status flows back. Neither KubeRay's operator nor Kueue runs here, so the test writes the
RayJob status KubeRay would write and admits a suspended RayJob as Kueue would (stand-ins,
named as such); `test_kuberay.py` runs KubeRay's real operator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubeobjects import eventually
from lightkube import ApiError, Client
from operators import OperatorProcess, admit_as_kueue, apply, as_kuberay

from kapell.api import GPUPool, TrainingJob
from kapell.api.kinds import CAPACITY_TYPE_LABEL
from kapell.backends.kubernetes import rayjob
from kapell.backends.kubernetes.rayjob import RayJobOptions
from kapell.backends.kubernetes.store import TrainingJobResource
from kapell.backends.kubernetes.training import (
    ClusterQueue,
    LocalQueue,
    PodGroup,
    RayJob,
    ResourceFlavor,
)

WAIT_S = 60.0


def training_job(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "entrypoint": "python -m kapell.train.shakespeare",
            "workerGroupSpecs": [
                {"groupName": "gpu", "replicas": 2, "spot": True,
                 "resources": {"cpu": "2", "memory": "4Gi", "gpu": {"count": 1}}},
                {"groupName": "cpu", "replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}},
            ],
        },
    }  # fmt: skip


def gpu_pool(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": "fleet", "namespace": namespace},
        "spec": {
            "nodes": [
                {"gpuModel": "H100", "count": 3, "gpusPerNode": 8},
                {"gpuModel": "H100", "count": 1, "gpusPerNode": 8, "spot": True,
                 "taints": [{"key": "example.com/spot", "value": "true"}]},
            ]
        },
    }  # fmt: skip


def _contains(stored: Any, sent: Any, path: str = "") -> list[str]:
    """Where ``sent`` is not in ``stored`` (the apiserver may add defaults, never drop)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path]
        return [m for k, v in sent.items() for m in _contains(stored.get(k), v, f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [m for i, v in enumerate(sent) for m in _contains(stored[i], v, f"{path}[{i}]")]
    return [] if stored == sent else [path]


def _get(kube: Client, resource: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
    kwargs = {"namespace": namespace} if namespace else {}
    found: dict[str, Any] = kube.get(resource, name, **kwargs).to_dict()
    return found


def test_apiserver_accepts_every_rendered_training_object(
    ecosystem_crds: list[str], kapell_crds: str, kubectl: Callable[..., str], kube: Client,
    namespace: str,
) -> None:  # fmt: skip
    apply(kubectl, training_job("llm", namespace), gpu_pool(namespace))
    stored = _get(kube, TrainingJobResource, "llm", namespace)
    uid = stored["metadata"]["uid"]
    job = TrainingJob.model_validate({**training_job("llm", namespace)})
    pool = GPUPool.model_validate(gpu_pool(namespace))
    queue = f"q-{namespace}"  # cluster-scoped: one per test namespace
    kueue = RayJobOptions(queue=queue)
    volcano = RayJobOptions(gang="volcano", suspend=True)
    sent = [
        *rayjob.kueue_objects([pool], [namespace], queue),
        *rayjob.job_objects(job, "rev0000000", 0, uid, [pool], kueue),
        *rayjob.job_objects(job, "rev0000000", 1, uid, [pool], volcano)[2:],  # PodGroup, RayJob
    ]
    apply(kubectl, *sent)

    resources = {"ResourceFlavor": ResourceFlavor, "ClusterQueue": ClusterQueue,
                 "LocalQueue": LocalQueue, "PodGroup": PodGroup, "RayJob": RayJob}  # fmt: skip
    from lightkube.resources.resource_v1 import ResourceClaimTemplate

    resources["ResourceClaimTemplate"] = ResourceClaimTemplate
    for manifest in sent:
        meta = manifest["metadata"]
        back = _get(kube, resources[manifest["kind"]], meta["name"], meta.get("namespace"))
        where = f"{manifest['kind']} {meta['name']}"
        assert _contains(back["spec"], manifest["spec"]) == [], where
        assert _contains(back["metadata"].get("labels"), meta.get("labels", {})) == [], where

    kueue_job = _get(kube, RayJob, rayjob.rayjob_name("llm", "rev0000000", 0), namespace)
    assert kueue_job["metadata"]["labels"][rayjob.QUEUE_LABEL] == queue
    assert kueue_job["metadata"]["ownerReferences"][0]["uid"] == uid
    workers = kueue_job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    spot = workers[0]["template"]["spec"]
    terms = spot["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0] == {
        "key": CAPACITY_TYPE_LABEL, "operator": "In", "values": ["spot"]}  # fmt: skip
    assert spot["tolerations"][0]["key"] == "example.com/spot"
    assert spot["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "llm-gpu-gpu"}]
    held = _get(kube, RayJob, rayjob.rayjob_name("llm", "rev0000000", 1), namespace)
    assert held["spec"]["suspend"] is True and rayjob.QUEUE_LABEL not in held["metadata"]["labels"]
    for name in [m["metadata"]["name"] for m in sent if m["kind"] == "ResourceFlavor"]:
        assert _get(kube, ResourceFlavor, name)["spec"]["nodeLabels"][CAPACITY_TYPE_LABEL]
    kube.delete(ClusterQueue, queue)


def _training_status(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    try:
        return dict(_get(kube, TrainingJobResource, name, namespace).get("status") or {})
    except ApiError:
        return {}


def _rayjobs(kube: Client, namespace: str) -> list[dict[str, Any]]:
    return [r.to_dict() for r in kube.list(RayJob, namespace=namespace)]


def test_operator_runs_a_trainingjob_as_rayjobs_and_reads_their_status_back(
    ecosystem_crds: list[str], operator: OperatorProcess, kubectl: Callable[..., str],
    kube: Client, namespace: str,
) -> None:  # fmt: skip
    apply(kubectl, training_job("tiny", namespace))
    uid = _get(kube, TrainingJobResource, "tiny", namespace)["metadata"]["uid"]

    def one_rayjob(attempt: int) -> dict[str, Any] | None:
        found = [r for r in _rayjobs(kube, namespace) if not r["metadata"].get("deletionTimestamp")]
        labels = [r["metadata"]["labels"] for r in found]
        if [lab.get(rayjob.ATTEMPT_LABEL) for lab in labels] == [str(attempt)]:
            return found[0]
        return None

    first = eventually(lambda: one_rayjob(0), "the RayJob of attempt 0", WAIT_S)
    owner = first["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("TrainingJob", "tiny", uid)
    env = json.loads(first["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["KAPELL_JOB_NAME"] == "tiny" and env["KAPELL_WORKERS"] == "3"
    name = first["metadata"]["name"]
    admit_as_kueue(kube, first)

    def status_where(**wanted: object) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            found = _training_status(kube, "tiny", namespace)
            return found if all(found.get(k) == v for k, v in wanted.items()) else None

        return eventually(probe, f"TrainingJob status with {wanted}", WAIT_S)

    as_kuberay(kube, name, namespace, "Running", "RUNNING")
    running = status_where(phase="Running", attempt=0)
    assert (
        running["message"]
        == f"RayJob {name} Running/RUNNING: stand-in for KubeRay: Running/RUNNING"
    )
    # The attempt fails: the controller starts the next one and the old RayJob goes.
    as_kuberay(kube, name, namespace, "Complete", "FAILED")
    second = eventually(lambda: one_rayjob(1), "the RayJob of attempt 1", WAIT_S)
    assert second["spec"]["suspend"] is first["spec"]["suspend"]  # admitted again, as a whole
    admit_as_kueue(kube, second)
    status_where(attempt=1)
    as_kuberay(kube, second["metadata"]["name"], namespace, "Complete", "SUCCEEDED")
    done = status_where(phase="Succeeded", attempt=1)
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert done["submissionId"] == f"{second['metadata']['name']}-id"
