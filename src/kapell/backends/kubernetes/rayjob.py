"""The objects one TrainingJob becomes on a cluster: a KubeRay ``RayJob`` and what admits it.

Pure rendering, no API calls, like ``pods``. One RayJob per run (``rayjob_name``: a retry, or a
restart on other capacity, never waits for the previous RayJob's finalizers), owned by the
TrainingJob and labelled with it, its revision, its attempt and its restart, which is all the
training backend needs to find it again. Written for KubeRay v1.7.0's ``ray.io/v1`` schema,
using no field older releases lack.

Placement comes from the GPUPools' node groups: the head (the driver, no training) goes on
on-demand nodes, each worker group on its capacity (spot for a group marked ``spot``, which
the spot decision may clear for a run), as a required node affinity with one term
per node group of that capacity and tolerations for those groups' taints. A worker group with
a GPU request gets a ResourceClaimTemplate (DRA, ``dra.claim_template``): one claim per pod.

Gang admission: all pods of a job start together or not at all. With Kueue (the default) the
RayJob carries the LocalQueue label and is created suspended; Kueue admits the whole job against
the ClusterQueue's quota per ResourceFlavor (one flavor per node group selector, spot and
on-demand) and unsuspends it. With Volcano a PodGroup with ``minMember`` = every pod of the job
gangs the pods in Volcano's scheduler. A job held by kapell (a deferred start) is created
suspended, labelled ``HELD_LABEL`` and, under Kueue, without the queue label, so Kueue does not
release it before kapell. KubeRay makes no Ray cluster for a suspended RayJob and makes one from
the spec as it then is when unsuspended (its webhook checks only the name), so a held RayJob's
worker placement may still change before its release; a running one's may not (a move between
spot and on-demand is a new RayJob, resuming from the newest checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kapell.api import TrainingJob
from kapell.api.images import KAPELL_IMAGE
from kapell.api.kinds import GPUNodeGroup, GPUPool, WorkerGroup
from kapell.api.model import Resources
from kapell.api.units import parse_quantity
from kapell.backends.kubernetes import dra
from kapell.backends.kubernetes.inventory import request_of
from kapell.backends.kubernetes.pods import MANAGED_BY, REVISION_LABEL, Manifest
from kapell.backends.local.training import job_env

RAYJOB_API = "ray.io/v1"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
VOLCANO_API = "scheduling.volcano.sh/v1beta1"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
JOB_LABEL = "kapell.dev/trainingjob"
ATTEMPT_LABEL = "kapell.dev/attempt"
RESTART_LABEL = "kapell.dev/restart"
HELD_LABEL = "kapell.dev/held"
"""On a RayJob that kapell holds suspended until its planned start (not Kueue's suspension)."""
CAPACITY_LABEL = "kapell.dev/capacity"
DEFAULT_QUEUE = "kapell"
GPU_RESOURCE = "nvidia.com/gpu"
"""The name Kueue counts DRA GPUs under: map both NVIDIA device classes to it in Kueue's
configuration (``resources.deviceClassMappings``)."""
MAX_RAYJOB_NAME = 47
"""KubeRay refuses longer RayJob names: its cluster, service and pod names append to them."""

Gang = Literal["kueue", "volcano", "none"]
Capacity = Literal["spot", "on-demand"]


@dataclass(frozen=True)
class RayJobOptions:
    """How to render a job beyond its spec: the operator's settings and the policy's choices.

    ``suspend``: hold the job (a deferred start); kapell releases it at its planned start.
    ``checkpoint_root``: where checkpoints go when the spec names no ``checkpoint.uri``.
    """

    gang: Gang = "kueue"
    queue: str = DEFAULT_QUEUE
    suspend: bool = False
    image: str = KAPELL_IMAGE
    head: Resources = field(default_factory=lambda: Resources(cpu="1", memory="2Gi"))
    checkpoint_root: str = "/tmp/kapell-checkpoints"


def rayjob_name(job_name: str, revision: str, attempt: int, restart: int = 0) -> str:
    """``<job>-<revision>-<attempt>`` (5 characters of the revision), ``-r<restart>`` appended
    for a restart within the attempt: a new spec, attempt or restart gets a new RayJob, never
    one still being deleted. Shortened with a hash of the job's name where KubeRay would refuse
    it."""
    suffix = f"-{revision[:5]}-{attempt}" + (f"-r{restart}" if restart else "")
    if len(job_name) + len(suffix) <= MAX_RAYJOB_NAME:
        return job_name + suffix
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:6]
    keep = MAX_RAYJOB_NAME - len(suffix) - len(digest) - 1
    return f"{job_name[:keep].rstrip('-')}-{digest}{suffix}"


def claim_template_name(job_name: str, group: str) -> str:
    return f"{job_name}-{group}-gpu"[:253]


def node_groups(pools: Iterable[GPUPool], capacity: Capacity) -> list[GPUNodeGroup]:
    """The node groups of one capacity across the pools; without any, one group that stands
    for every node of that capacity (selected by the default capacity label)."""
    spot = capacity == "spot"
    found = [g for pool in pools for g in pool.spec.nodes if g.spot == spot]
    return found or [GPUNodeGroup(gpu_model="any", count=0, spot=spot)]


def worker_capacity(group: WorkerGroup) -> Capacity:
    """Spot for a group marked ``spot`` (the spot decision, ``training_schedule.on_capacity``,
    sets the mark on each run's copy of the job), else on-demand."""
    return "spot" if group.spot else "on-demand"


def _placement(groups: Sequence[GPUNodeGroup]) -> Manifest:
    """Pod spec fields that keep a pod on these node groups' nodes and let it onto their taints."""
    terms = []
    for selector in _distinct(g.selector for g in groups):
        terms.append(
            {
                "matchExpressions": [
                    {"key": k, "operator": "In", "values": [v]} for k, v in sorted(selector.items())
                ]
            }
        )
    required = {"nodeSelectorTerms": terms}
    fields: Manifest = {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    }
    tolerations = _distinct(
        {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
        for g in groups
        for t in g.taints
    )
    if tolerations:
        fields["tolerations"] = tolerations
    return fields


def _distinct(items: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True), item)
    return list(seen.values())


def _container_resources(resources: Resources) -> Manifest:
    """Requests equal to limits: KubeRay reads Ray's CPU count from the limit."""
    amounts = {"cpu": str(resources.cpu), "memory": str(resources.memory)}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _gpus_for_ray(resources: Resources) -> int:
    """Ray's ``num-gpus`` for a pod: KubeRay cannot see DRA devices in the container limits."""
    gpu = resources.gpu
    if gpu is None or gpu.milli_gpus == 0:
        return 0
    return gpu.count if gpu.count else 1  # a share or a MIG slice is one device to Ray


def _pod_template(
    job: TrainingJob,
    container: Manifest,
    placement: Manifest,
    labels: Mapping[str, str],
    options: RayJobOptions,
    run_name: str,
) -> Manifest:
    # Not ``MANAGED_BY``: KubeRay manages these pods, and kapell's replica backend treats pods
    # with that label as Model replicas of its own.
    meta: Manifest = {"labels": {JOB_LABEL: job.metadata.name, **labels}}
    spec: Manifest = {**placement, "containers": [container]}
    if options.gang == "volcano":
        meta["annotations"] = {VOLCANO_GROUP_ANNOTATION: run_name}
        spec["schedulerName"] = "volcano"
    return {"metadata": meta, "spec": spec}


def _head_group(
    job: TrainingJob, pools: Sequence[GPUPool], options: RayJobOptions, run_name: str
) -> Manifest:
    container = {
        "name": "ray-head",
        "image": options.image,
        "resources": _container_resources(options.head),
    }
    template = _pod_template(
        job,
        container,
        _placement(node_groups(pools, "on-demand")),
        {CAPACITY_LABEL: "on-demand"},
        options,
        run_name,
    )
    # No CPUs for Ray on the head: it runs the driver, the workers train (as locally).
    return {"rayStartParams": {"num-cpus": "0"}, "template": template}


def _worker_group(
    job: TrainingJob,
    group: WorkerGroup,
    pools: Sequence[GPUPool],
    options: RayJobOptions,
    run_name: str,
) -> Manifest:
    capacity = worker_capacity(group)
    container: Manifest = {
        "name": "ray-worker",
        "image": options.image,
        "resources": _container_resources(group.resources),
    }
    template = _pod_template(
        job,
        container,
        _placement(node_groups(pools, capacity)),
        {CAPACITY_LABEL: capacity, "kapell.dev/group": group.group_name},
        options,
        run_name,
    )
    params = {"num-cpus": str(max(1, math.ceil(parse_quantity(str(group.resources.cpu)))))}
    gpus = _gpus_for_ray(group.resources)
    if gpus:
        params["num-gpus"] = str(gpus)
        template["spec"]["resourceClaims"] = [
            {
                "name": dra.REQUEST_NAME,
                "resourceClaimTemplateName": claim_template_name(
                    job.metadata.name, group.group_name
                ),
            }
        ]
        container["resources"]["claims"] = dra.CONTAINER_CLAIMS
    return {
        "groupName": group.group_name,
        "replicas": group.replicas,
        "minReplicas": group.replicas,
        "maxReplicas": group.replicas,
        "rayStartParams": params,
        "template": template,
    }


def owner_reference(job: TrainingJob, uid: str) -> Manifest:
    return {
        "apiVersion": job.api_version,
        "kind": "TrainingJob",
        "name": job.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _entrypoint(job: TrainingJob) -> str:
    import shlex

    spec = job.spec
    if spec.runtime_env.working_dir:
        return f"cd {shlex.quote(spec.runtime_env.working_dir)} && {spec.entrypoint}"
    return spec.entrypoint


def ray_job(
    job: TrainingJob,
    revision: str,
    attempt: int,
    owner_uid: str,
    pools: Sequence[GPUPool] = (),
    options: RayJobOptions | None = None,
    restart: int = 0,
) -> Manifest:
    """The RayJob of one run (``restart``) of one attempt of ``job``.

    KubeRay's own retries are off (``backoffLimit: 0``): the TrainingJob controller counts
    attempts. The Ray cluster goes when the job finishes (``shutdownAfterJobFinishes``), as
    Kueue requires, and the submitter runs beside the head (``SidecarMode``), so it needs no
    Kubernetes Job of its own nor cluster DNS.
    """
    options = options or RayJobOptions()
    name = rayjob_name(job.metadata.name, revision, attempt, restart)
    env = job_env(job, options.checkpoint_root)
    env_vars = {**job.spec.runtime_env.env_vars, **env.environ()}
    labels = {
        **MANAGED_BY,
        JOB_LABEL: job.metadata.name,
        REVISION_LABEL: revision,
        ATTEMPT_LABEL: str(attempt),
        RESTART_LABEL: str(restart),
    }
    held = options.suspend
    if held:
        labels[HELD_LABEL] = "true"
    elif options.gang == "kueue":
        labels[QUEUE_LABEL] = options.queue
    spec: Manifest = {
        "entrypoint": _entrypoint(job),
        "runtimeEnvYAML": json.dumps({"env_vars": env_vars}, sort_keys=True),
        "submissionMode": "SidecarMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 60,
        "backoffLimit": 0,
        # Kueue admits a job by unsuspending it, so it is created suspended.
        "suspend": held or options.gang == "kueue",
        "rayClusterSpec": {
            "headGroupSpec": _head_group(job, pools, options, name),
            "workerGroupSpecs": [
                _worker_group(job, g, pools, options, name) for g in job.spec.worker_group_specs
            ],
        },
    }
    return {
        "apiVersion": RAYJOB_API,
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": job.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(job, owner_uid)],
        },
        "spec": spec,
    }


def claim_templates(job: TrainingJob, owner_uid: str) -> list[Manifest]:
    """One ResourceClaimTemplate per worker group that asks for GPUs (kept across attempts)."""
    out = []
    for group in job.spec.worker_group_specs:
        if not _gpus_for_ray(group.resources):
            continue
        name = claim_template_name(job.metadata.name, group.group_name)
        request = request_of(group.resources, name)
        template = dra.claim_template(request, job.metadata.namespace, name)
        template["metadata"]["labels"][JOB_LABEL] = job.metadata.name
        template["metadata"]["ownerReferences"] = [owner_reference(job, owner_uid)]
        out.append(template)
    return out


def pod_group(
    job: TrainingJob,
    revision: str,
    attempt: int,
    owner_uid: str,
    options: RayJobOptions | None = None,
    restart: int = 0,
) -> Manifest:
    """Volcano's PodGroup for one run: the head and every worker, or none of them."""
    options = options or RayJobOptions()
    pods = [(1, options.head)]
    pods += [(g.replicas, g.resources) for g in job.spec.worker_group_specs]
    cpu = sum(n * parse_quantity(str(r.cpu)) for n, r in pods)
    memory = sum(n * parse_quantity(str(r.memory)) for n, r in pods)
    spec: Manifest = {
        "minMember": sum(n for n, _ in pods),
        "minResources": {"cpu": _quantity(cpu), "memory": _quantity(memory)},
    }
    return {
        "apiVersion": VOLCANO_API,
        "kind": "PodGroup",
        "metadata": {
            "name": rayjob_name(job.metadata.name, revision, attempt, restart),
            "namespace": job.metadata.namespace,
            "labels": {**MANAGED_BY, JOB_LABEL: job.metadata.name, ATTEMPT_LABEL: str(attempt)},
            "ownerReferences": [owner_reference(job, owner_uid)],
        },
        "spec": spec,
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity: whole units when whole, else milli-units (rounded up)."""
    return str(int(value)) if value == int(value) else f"{math.ceil(value * 1000)}m"


@dataclass(frozen=True)
class QueueShape:
    """What Kueue may admit per GPU of a flavor (a GPUPool names GPUs, not CPUs or memory)."""

    cpu_per_gpu: int = 24
    memory_per_gpu: str = "256Gi"  # an 8-GPU H100 node: 192 vCPU, 2 TiB


def _flavor_name(group: GPUNodeGroup) -> str:
    capacity = "spot" if group.spot else "on-demand"
    if not group.node_labels:
        return capacity
    digest = hashlib.sha256(json.dumps(group.selector, sort_keys=True).encode()).hexdigest()
    return f"{capacity}-{digest[:8]}"


def kueue_objects(
    pools: Sequence[GPUPool],
    namespaces: Iterable[str],
    queue: str = DEFAULT_QUEUE,
    shape: QueueShape | None = None,
) -> list[Manifest]:
    """ResourceFlavors (one per node group selector: spot and on-demand), one ClusterQueue with
    the pools' GPUs as its quota, and a LocalQueue in each namespace that runs TrainingJobs."""
    shape = shape or QueueShape()
    groups = [*node_groups(pools, "on-demand"), *node_groups(pools, "spot")]
    flavors: dict[str, Manifest] = {}
    gpus: dict[str, int] = {}
    for group in groups:
        name = _flavor_name(group)
        gpus[name] = gpus.get(name, 0) + group.count * group.gpus_per_node
        spec: Manifest = {"nodeLabels": group.selector}
        if group.taints:
            spec["nodeTaints"] = [
                {"key": t.key, "value": t.value, "effect": t.effect} for t in group.taints
            ]
        flavors[name] = {
            "apiVersion": KUEUE_API,
            "kind": "ResourceFlavor",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
            "spec": spec,
        }
    memory_per_gpu = parse_quantity(shape.memory_per_gpu)
    quotas = []
    for name, count in gpus.items():
        # A capacity without declared nodes still admits CPU-only jobs (their head, at least).
        quota_gpus = max(count, 1)
        quotas.append(
            {
                "name": name,
                "resources": [
                    {"name": "cpu", "nominalQuota": str(quota_gpus * shape.cpu_per_gpu)},
                    {"name": "memory", "nominalQuota": _quantity(quota_gpus * memory_per_gpu)},
                    {"name": GPU_RESOURCE, "nominalQuota": str(count)},
                ],
            }
        )
    cluster_queue = {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": queue, "labels": dict(MANAGED_BY)},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {"coveredResources": ["cpu", "memory", GPU_RESOURCE], "flavors": quotas}
            ],
        },
    }
    local_queues = [
        {
            "apiVersion": KUEUE_API,
            "kind": "LocalQueue",
            "metadata": {"name": queue, "namespace": ns, "labels": dict(MANAGED_BY)},
            "spec": {"clusterQueue": queue},
        }
        for ns in sorted(set(namespaces))
    ]
    return [*flavors.values(), cluster_queue, *local_queues]


def job_objects(
    job: TrainingJob,
    revision: str,
    attempt: int,
    owner_uid: str,
    pools: Sequence[GPUPool] = (),
    options: RayJobOptions | None = None,
    restart: int = 0,
) -> list[Manifest]:
    """Everything one run needs, in the order to apply it: claim templates and the PodGroup
    before the RayJob whose pods use them."""
    options = options or RayJobOptions()
    objects = claim_templates(job, owner_uid)
    if options.gang == "volcano":
        objects.append(pod_group(job, revision, attempt, owner_uid, options, restart))
    objects.append(ray_job(job, revision, attempt, owner_uid, pools, options, restart))
    return objects
