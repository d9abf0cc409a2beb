"""A TrainingJob rendered as a KubeRay RayJob: placement by capacity, DRA claims, gang admission."""

from __future__ import annotations

import json
from typing import Any

from kapell.api import GPUPool, TrainingJob
from kapell.api.kinds import CAPACITY_TYPE_LABEL
from kapell.api.loader import load_text
from kapell.backends.kubernetes import rayjob
from kapell.backends.kubernetes.rayjob import RayJobOptions
from kapell.control.training_schedule import on_capacity
from kapell.policy.spot.decide import Capacity

JOB = """\
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: llm, namespace: team}
spec:
  entrypoint: python train.py
  runtimeEnv: {workingDir: /srv/job, envVars: {SEED: "7"}}
  workerGroupSpecs:
  - groupName: gpu
    replicas: 3
    spot: true
    resources: {cpu: "4", memory: 16Gi, gpu: {count: 2, memory: 40Gi}}
  - groupName: mig
    replicas: 1
    resources: {cpu: "1", memory: 4Gi, gpu: {migProfile: 1g.10gb}}
  checkpoint: {uri: "s3://bucket/runs", intervalSteps: 50}
"""

POOL = """\
apiVersion: kapell.dev/v1alpha1
kind: GPUPool
metadata: {name: fleet, namespace: team}
spec:
  nodes:
  - {gpuModel: H100, count: 4, gpusPerNode: 8}
  - gpuModel: H100
    count: 10
    gpusPerNode: 8
    spot: true
    nodeLabels: {cloud.example/spot: "true"}
    taints: [{key: cloud.example/spot, value: "true", effect: NoSchedule}]
  - {gpuModel: A100, count: 2, gpusPerNode: 8, spot: true}
"""


def _job(text: str = JOB) -> TrainingJob:
    [job] = load_text(text, "job.yaml")
    assert isinstance(job, TrainingJob)
    return job


def _pool() -> GPUPool:
    [pool] = load_text(POOL, "pool.yaml")
    assert isinstance(pool, GPUPool)
    return pool


def _terms(template: dict[str, Any]) -> list[dict[str, str]]:
    affinity = template["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [{e["key"]: e["values"][0] for e in t["matchExpressions"]} for t in terms]


def test_head_goes_on_demand_and_spot_workers_on_every_spot_group_with_its_tolerations() -> None:
    manifest = rayjob.ray_job(_job(), "rev1", 0, "uid-1", [_pool()])
    cluster = manifest["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]
    assert _terms(head) == [{CAPACITY_TYPE_LABEL: "on-demand"}]
    assert "tolerations" not in head["spec"]
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}
    gpu, mig = cluster["workerGroupSpecs"]
    assert _terms(gpu["template"]) == [
        {"cloud.example/spot": "true"},
        {CAPACITY_TYPE_LABEL: "spot"},
    ]
    assert gpu["template"]["spec"]["tolerations"] == [
        {"key": "cloud.example/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert gpu["template"]["metadata"]["labels"] == {
        rayjob.JOB_LABEL: "llm",
        rayjob.CAPACITY_LABEL: "spot",
        "kapell.dev/group": "gpu",
    }  # not kapell's managed-by label: KubeRay manages these pods, not the replica backend
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (3, 3, 3)
    # A group not marked spot stays on on-demand nodes.
    assert _terms(mig["template"]) == [{CAPACITY_TYPE_LABEL: "on-demand"}]


def test_the_spot_decision_moves_a_worker_group_to_on_demand() -> None:
    moved = on_capacity(_job(), Capacity.ON_DEMAND)  # the run's job, as the scheduler gives it
    manifest = rayjob.ray_job(moved, "rev1", 0, "uid-1", [_pool()])
    gpu = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert _terms(gpu["template"]) == [{CAPACITY_TYPE_LABEL: "on-demand"}]
    assert gpu["template"]["metadata"]["labels"][rayjob.CAPACITY_LABEL] == "on-demand"


def test_gpu_worker_groups_get_a_claim_template_each_and_tell_ray_their_gpus() -> None:
    job = _job()
    manifest = rayjob.ray_job(job, "rev1", 0, "uid-1")
    gpu, mig = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert gpu["rayStartParams"] == {"num-cpus": "4", "num-gpus": "2"}
    assert mig["rayStartParams"] == {"num-cpus": "1", "num-gpus": "1"}
    pod = gpu["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "llm-gpu-gpu"}]
    container = pod["containers"][0]
    assert container["resources"]["claims"] == [{"name": "gpu"}]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}

    templates = {t["metadata"]["name"]: t for t in rayjob.claim_templates(job, "uid-1")}
    assert set(templates) == {"llm-gpu-gpu", "llm-mig-gpu"}
    whole = templates["llm-gpu-gpu"]["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert whole["deviceClassName"] == "gpu.nvidia.com" and whole["count"] == 2
    assert "compareTo(quantity('40960Mi')) >= 0" in whole["selectors"][0]["cel"]["expression"]
    mig_request = templates["llm-mig-gpu"]["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert mig_request["deviceClassName"] == "mig.nvidia.com"
    assert "== '1g.10gb'" in mig_request["selectors"][0]["cel"]["expression"]
    owner = templates["llm-gpu-gpu"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingJob", "uid-1", True)


def test_a_cpu_only_job_needs_no_claims() -> None:
    cpu_job = JOB.replace(", gpu: {count: 2, memory: 40Gi}", "").replace(
        ", gpu: {migProfile: 1g.10gb}", ""
    )
    job = _job(cpu_job)
    assert rayjob.claim_templates(job, "uid") == []
    for group in rayjob.ray_job(job, "r", 0, "uid")["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert "resourceClaims" not in group["template"]["spec"]
        assert "num-gpus" not in group["rayStartParams"]


def test_kueue_gets_the_queue_label_and_a_suspended_job_it_releases() -> None:
    manifest = rayjob.ray_job(_job(), "rev1", 2, "uid-1")
    meta, spec = manifest["metadata"], manifest["spec"]
    assert meta["name"] == "llm-rev1-2" and meta["namespace"] == "team"
    assert meta["labels"][rayjob.QUEUE_LABEL] == "kapell"
    assert meta["labels"][rayjob.ATTEMPT_LABEL] == "2"
    assert meta["labels"]["kapell.dev/revision"] == "rev1"
    assert spec["suspend"] is True
    assert spec["backoffLimit"] == 0 and spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "SidecarMode"
    assert spec["entrypoint"] == "cd /srv/job && python train.py"
    env = json.loads(spec["runtimeEnvYAML"])["env_vars"]
    assert env["SEED"] == "7" and env["KAPELL_WORKERS"] == "4"
    assert env["KAPELL_CHECKPOINT_URI"] == "s3://bucket/runs"
    assert env["KAPELL_CHECKPOINT_INTERVAL"] == "50"


def test_a_held_job_is_suspended_and_out_of_kueues_reach_until_released() -> None:
    held = rayjob.ray_job(_job(), "r", 0, "u", options=RayJobOptions(suspend=True))
    assert held["spec"]["suspend"] is True
    assert rayjob.QUEUE_LABEL not in held["metadata"]["labels"]
    assert held["metadata"]["labels"][rayjob.HELD_LABEL] == "true"
    released = rayjob.ray_job(_job(), "r", 0, "u")
    assert released["metadata"]["name"] == held["metadata"]["name"]  # the same RayJob, released
    assert rayjob.HELD_LABEL not in released["metadata"]["labels"]
    assert released["metadata"]["labels"][rayjob.QUEUE_LABEL] == rayjob.DEFAULT_QUEUE
    plain = RayJobOptions(gang="none")
    assert rayjob.ray_job(_job(), "r", 0, "u", options=plain)["spec"]["suspend"] is False
    held_plain = RayJobOptions(gang="none", suspend=True)
    assert rayjob.ray_job(_job(), "r", 0, "u", options=held_plain)["spec"]["suspend"] is True


def test_volcano_gangs_the_head_and_every_worker_in_one_pod_group() -> None:
    options = RayJobOptions(gang="volcano")
    objects = rayjob.job_objects(_job(), "r", 1, "uid", [_pool()], options)
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ResourceClaimTemplate", "ResourceClaimTemplate", "PodGroup", "RayJob"]
    group, job = objects[2], objects[3]
    assert group["spec"]["minMember"] == 1 + 3 + 1
    # The head's 1 CPU and 2Gi, three 4-CPU 16Gi workers, one 1-CPU 4Gi worker.
    assert group["spec"]["minResources"] == {"cpu": "14", "memory": str(54 * 2**30)}
    assert rayjob.QUEUE_LABEL not in job["metadata"]["labels"]
    assert job["spec"]["suspend"] is False
    cluster = job["spec"]["rayClusterSpec"]
    for template in [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]:
        assert template["spec"]["schedulerName"] == "volcano"
        assert template["metadata"]["annotations"] == {
            rayjob.VOLCANO_GROUP_ANNOTATION: group["metadata"]["name"]
        }


def test_names_fit_kuberays_limit_and_differ_per_revision_and_attempt() -> None:
    name = "a-very-long-training-job-name-that-kuberay-would-refuse-x"
    first, second = (
        rayjob.rayjob_name(name, "abcdef0123", 0),
        rayjob.rayjob_name(name, "abcdef", 11),
    )
    assert len(first) <= rayjob.MAX_RAYJOB_NAME and len(second) <= rayjob.MAX_RAYJOB_NAME
    assert first != second and first.endswith("-abcde-0") and second.endswith("-abcde-11")
    assert rayjob.rayjob_name(name + "y", "abcdef", 0) != first  # the hash keeps names apart
    assert rayjob.rayjob_name("short", "0123456789", 3) == "short-01234-3"
    assert rayjob.rayjob_name("short", "9876543210", 3) != "short-01234-3"
    restarted = rayjob.rayjob_name(name, "abcdef", 11, restart=12)  # a move to other capacity
    assert len(restarted) <= rayjob.MAX_RAYJOB_NAME and restarted.endswith("-abcde-11-r12")
    assert rayjob.rayjob_name("short", "0123456789", 3, 1) == "short-01234-3-r1"


def test_kueue_flavors_follow_the_node_groups_and_quota_their_gpus() -> None:
    objects = rayjob.kueue_objects([_pool()], ["team", "team", "ml"])
    flavors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ResourceFlavor"}
    assert flavors["on-demand"]["spec"] == {"nodeLabels": {CAPACITY_TYPE_LABEL: "on-demand"}}
    assert flavors["spot"]["spec"] == {"nodeLabels": {CAPACITY_TYPE_LABEL: "spot"}}
    [custom] = [f for name, f in flavors.items() if name.startswith("spot-")]
    assert custom["spec"]["nodeLabels"] == {"cloud.example/spot": "true"}
    assert custom["spec"]["nodeTaints"] == [
        {"key": "cloud.example/spot", "value": "true", "effect": "NoSchedule"}
    ]
    [queue] = [o for o in objects if o["kind"] == "ClusterQueue"]
    quotas = {
        f["name"]: {r["name"]: r["nominalQuota"] for r in f["resources"]}
        for f in queue["spec"]["resourceGroups"][0]["flavors"]
    }
    assert quotas["on-demand"][rayjob.GPU_RESOURCE] == "32"
    assert quotas[custom["metadata"]["name"]][rayjob.GPU_RESOURCE] == "80"
    assert quotas["spot"][rayjob.GPU_RESOURCE] == "16"
    assert quotas["spot"]["cpu"] == str(16 * 24)
    local = [o for o in objects if o["kind"] == "LocalQueue"]
    assert [(q["metadata"]["namespace"], q["spec"]["clusterQueue"]) for q in local] == [
        ("ml", "kapell"),
        ("team", "kapell"),
    ]


def test_without_pools_both_capacities_use_the_default_label() -> None:
    objects = rayjob.kueue_objects([], ["default"])
    flavors = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "ResourceFlavor")
    assert flavors == ["on-demand", "spot"]
