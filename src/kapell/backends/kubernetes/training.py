"""TrainingJobs on a cluster: each run is a KubeRay RayJob; this is the controller's backend.

It only executes and observes, like ``LocalRayJobs``: ``start`` server-side applies (on a writer
thread: a reconcile never waits on the apiserver) the attempt's objects (``rayjob.job_objects``: claim templates, a Volcano PodGroup or Kueue's queue
objects, the RayJob, all owned by the TrainingJob) and removes earlier attempts' RayJobs;
``run`` reads the newest attempt's RayJob from an informer and maps KubeRay's two status fields
(``jobDeploymentStatus``, ``jobStatus``) to a ``RunPhase``; ``stop`` deletes the job's RayJobs.
Retries are the controller's (``backoffLimit``), so KubeRay's own are off.

Until the informer has seen the RayJob just applied, ``run`` reports that attempt as starting:
an older attempt's failure, still cached, must not start a third one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ALL_NS, ApiError, Client
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.resource_v1 import ResourceClaimTemplate
from lightkube.types import CascadeType

from kapell.api import GPUPool, TrainingJob
from kapell.api.crd import plural_of
from kapell.api.meta import API_GROUP
from kapell.api.training import RunPhase, TrainingRun
from kapell.backends.kubernetes import pods, rayjob
from kapell.backends.kubernetes.informer import Informer, Key
from kapell.backends.kubernetes.rayjob import RayJobOptions
from kapell.backends.kubernetes.store import Stored, resource_body, server_side_apply

log = logging.getLogger(__name__)

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")
PodGroup = create_namespaced_resource("scheduling.volcano.sh", "v1beta1", "PodGroup", "podgroups")
ResourceFlavor = create_global_resource(
    "kueue.x-k8s.io", "v1beta2", "ResourceFlavor", "resourceflavors"
)
ClusterQueue = create_global_resource("kueue.x-k8s.io", "v1beta2", "ClusterQueue", "clusterqueues")
LocalQueue = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "LocalQueue", "localqueues")
GPUPoolResource = create_namespaced_resource(API_GROUP, "v1alpha1", "GPUPool", plural_of("GPUPool"))
_RESOURCES: dict[str, Any] = {
    "RayJob": RayJob,
    "PodGroup": PodGroup,
    "ResourceClaimTemplate": ResourceClaimTemplate,
    "ResourceFlavor": ResourceFlavor,
    "ClusterQueue": ClusterQueue,
    "LocalQueue": LocalQueue,
}

_RAY_JOB_PHASES = {
    "PENDING": RunPhase.PENDING,
    "RUNNING": RunPhase.RUNNING,
    "SUCCEEDED": RunPhase.SUCCEEDED,
    "FAILED": RunPhase.FAILED,
    "STOPPED": RunPhase.FAILED,
}


@dataclass(frozen=True)
class RayJobView:
    """What the backend keeps of one RayJob: who it runs for and how it goes."""

    namespace: str
    name: str
    job: str
    revision: str
    attempt: int
    suspended: bool
    deployment_status: str
    job_status: str
    message: str
    job_id: str
    dashboard_url: str
    deleting: bool

    @property
    def phase(self) -> RunPhase:
        """KubeRay's deployment status says where the cluster is; its job status where the
        job is, once submitted."""
        deployment = self.deployment_status
        if deployment in ("Failed", "ValidationFailed"):
            return RunPhase.FAILED
        if self.job_status in _RAY_JOB_PHASES:
            return _RAY_JOB_PHASES[self.job_status]
        if deployment == "Complete":  # finished without a job status: the cluster failed
            return RunPhase.FAILED
        if deployment in ("Suspended", "Suspending") or (self.suspended and not deployment):
            return RunPhase.PENDING  # waiting for admission (Kueue) or its planned start
        return RunPhase.STARTING

    def describe(self) -> str:
        """KubeRay's state in a line, with its message where it wrote one."""
        if self.suspended and self.deployment_status in ("", "Suspended", "Suspending"):
            said = f"RayJob {self.name} suspended: waiting for admission or its planned start"
        else:
            state = "/".join(s for s in (self.deployment_status, self.job_status) if s)
            said = f"RayJob {self.name} {state or 'created'}"
        return f"{said}: {self.message}" if self.message else said


def rayjob_view(raw: dict[str, Any]) -> RayJobView:
    meta = raw["metadata"]
    labels = meta.get("labels") or {}
    status = raw.get("status") or {}
    return RayJobView(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        job=labels.get(rayjob.JOB_LABEL, ""),
        revision=labels.get(pods.REVISION_LABEL, ""),
        attempt=int(labels.get(rayjob.ATTEMPT_LABEL) or 0),
        suspended=bool((raw.get("spec") or {}).get("suspend")),
        deployment_status=status.get("jobDeploymentStatus") or "",
        job_status=status.get("jobStatus") or "",
        message=status.get("message") or "",
        job_id=status.get("jobId") or "",
        dashboard_url=status.get("dashboardURL") or "",
        deleting=bool(meta.get("deletionTimestamp")),
    )


class KubeRayJobs:
    """Runs each TrainingJob as KubeRay RayJobs, one per attempt."""

    def __init__(
        self,
        client: Client,
        stored: Callable[[str], Stored[TrainingJob] | None],
        on_change: Callable[[str], None],
        namespace: str | None = None,
        options: RayJobOptions | None = None,
    ) -> None:
        """``stored(job_key)`` gives the TrainingJob's object (its uid owns what is made);
        ``on_change(job_key)`` is called when a RayJob of the job changes."""
        self._client = client
        self._stored = stored
        self._on_change = on_change
        self.options = options or RayJobOptions()
        self._started: dict[str, TrainingRun] = {}
        self._jobs: dict[Key, str] = {}  # RayJob -> its TrainingJob, for deletions
        # One writer: a stop and the start after it are applied in that order.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kapell-rayjobs")
        self._lock = threading.Lock()
        self.writes = 0
        self.informer: Informer[RayJobView] = Informer(
            client, RayJob, rayjob_view, self._changed, namespace=namespace, labels=pods.MANAGED_BY
        )

    def close(self) -> None:
        """Drop queued writes (the next leader applies them again)."""
        self._writer.shutdown(wait=False, cancel_futures=True)

    def _changed(self, key: Key, view: RayJobView | None) -> None:
        with self._lock:
            job = view.job if view is not None else self._jobs.pop(key, "")
            if view is not None:
                self._jobs[key] = view.job
        if job:
            self._on_change(f"TrainingJob/{key[0]}/{job}")

    def _views(self, job_key: str) -> list[RayJobView]:
        _, namespace, name = job_key.split("/", 2)
        return sorted(
            (v for v in self.informer.items() if v.namespace == namespace and v.job == name),
            key=lambda v: v.attempt,
        )

    # -- TrainingBackend ------------------------------------------------------------------
    def run(self, job_key: str) -> TrainingRun | None:
        views = [v for v in self._views(job_key) if not v.deleting]
        with self._lock:
            started = self._started.get(job_key)
        newest = views[-1] if views else None
        if started is not None and (newest is None or newest.attempt < started.attempt):
            return started  # applied; the informer has not seen it yet
        if newest is None:
            return None
        return TrainingRun(
            job_key,
            newest.revision,
            newest.attempt,
            newest.phase,
            newest.describe(),
            submission_id=newest.job_id,
            dashboard_url=newest.dashboard_url,
        )

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Apply the attempt's objects; earlier attempts' RayJobs are deleted."""
        stored = self._stored(job.key)
        if stored is None:
            return  # deleted meanwhile: the next reconcile sees it gone
        name = rayjob.rayjob_name(job.metadata.name, revision, attempt)
        run = TrainingRun(job.key, revision, attempt, RunPhase.STARTING, f"creating RayJob {name}")
        with self._lock:
            self._started[job.key] = run
        self._writer.submit(self._apply_attempt, job, run, name, stored.uid)

    def stop(self, job_key: str) -> None:
        with self._lock:
            self._started.pop(job_key, None)
        self._writer.submit(self._delete_all, job_key, None)

    # -- writes (on the writer thread) ----------------------------------------------------
    def _apply_attempt(self, job: TrainingJob, run: TrainingRun, name: str, uid: str) -> None:
        try:
            if self.options.gang == "kueue":
                self._apply_all(rayjob.kueue_objects(self._pools(), [job.metadata.namespace]))
            objects = rayjob.job_objects(
                job, run.revision, run.attempt, uid, self._pools(), self.options
            )
            self._apply_all(objects)
            self._delete_all(job.key, keep=name)
            return
        except ApiError as exc:
            failed = replace(run, phase=RunPhase.FAILED, message=_refused(exc))
        except (httpx.HTTPError, OSError) as exc:
            message = f"the apiserver could not be reached: {exc}"
            failed = replace(run, phase=RunPhase.FAILED, message=message)
        with self._lock:
            if self._started.get(job.key) is not run:
                return  # stopped or restarted meanwhile
            self._started[job.key] = failed
        self._on_change(job.key)

    def _delete_all(self, job_key: str, keep: str | None) -> None:
        for view in self._views(job_key):
            if view.name != keep:
                self._delete(view)

    def _pools(self) -> list[GPUPool]:
        """Every GPUPool in the cluster: their node groups say where spot and on-demand are."""
        try:
            listed: list[Any] = list(self._client.list(GPUPoolResource, namespace=ALL_NS))
        except ApiError as exc:
            if exc.status.code == 404:  # kapell's CRDs without GPUPool: default capacity labels
                return []
            raise
        pools = []
        for obj in listed:
            raw = obj.to_dict()
            try:
                pools.append(GPUPool.model_validate(resource_body(raw, "GPUPool")))
            except ValueError as exc:
                log.warning("GPUPool %s ignored: %s", raw["metadata"]["name"], exc)
        return pools

    def _apply_all(self, manifests: Sequence[dict[str, Any]]) -> None:
        for manifest in manifests:
            server_side_apply(self._client, _RESOURCES[manifest["kind"]], manifest)
            with self._lock:
                self.writes += 1

    def _delete(self, view: RayJobView) -> None:
        if view.deleting:
            return
        try:
            self._client.delete(
                RayJob, view.name, namespace=view.namespace, cascade=CascadeType.BACKGROUND
            )
        except ApiError as exc:
            if exc.status.code != 404:
                log.warning("RayJob %s/%s not deleted: %s", view.namespace, view.name, exc)
        except (httpx.HTTPError, OSError) as exc:  # the job's next reconcile deletes it again
            log.warning("RayJob %s/%s not deleted: %s", view.namespace, view.name, exc)


def _refused(exc: ApiError) -> str:
    """The apiserver's refusal in words a user can act on."""
    if exc.status.code == 404:
        return (
            f"{exc.status.message}: is KubeRay installed (the RayJob CRD, ray.io/v1)? With "
            "Kueue gang admission also Kueue's CRDs, or start the operator with "
            "--training-gang none"
        )
    return f"the apiserver refused the RayJob: {exc.status.message}"
