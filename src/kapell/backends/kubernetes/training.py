"""TrainingJobs on a cluster: each run is a KubeRay RayJob; this is the controller's backend.

It only executes and observes, like ``LocalRayJobs``: ``start`` server-side applies (on a writer
thread: a reconcile never waits on the apiserver) the run's objects (``rayjob.job_objects``:
claim templates, a Volcano PodGroup or Kueue's queue objects, the RayJob, all owned by the
TrainingJob) and removes earlier runs' RayJobs; ``run`` reads the newest run's RayJob from an
informer and maps KubeRay's two status fields (``jobDeploymentStatus``, ``jobStatus``) to a
``RunPhase``; ``stop`` deletes the job's RayJobs. Retries are the controller's
(``backoffLimit``), so KubeRay's own are off.

``hold`` applies the RayJob suspended and labelled held (a deferred start); ``start`` of the
same attempt then releases that RayJob (the same name, ``suspend: false``, placed on the
capacity decided at release). A start after a ``stop`` within one attempt (a move between spot
and on-demand) is a new RayJob, ``-r<restart>`` named, so it never waits for the old one's
finalizers.

Until the informer has seen the RayJob just applied (or released), ``run`` reports that run as
``start`` left it: an older attempt's failure, still cached, must not start a third one. The
run's progress (step, loss, checkpoints) comes from its driver's log (``DriverLogs``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ALL_NS, ApiError, Client
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.resource_v1 import ResourceClaimTemplate
from lightkube.types import CascadeType

from kapell.api import GPUPool, TrainingJob
from kapell.api.crd import plural_of
from kapell.api.meta import API_GROUP
from kapell.api.training import RunPhase, TrainingRun, progress_changes
from kapell.backends.kubernetes import pods, rayjob
from kapell.backends.kubernetes.driver_log import DriverLogs
from kapell.backends.kubernetes.informer import Informer, Key
from kapell.backends.kubernetes.rayjob import RayJobOptions
from kapell.backends.kubernetes.store import Stored, resource_body, server_side_apply
from kapell.backends.kubernetes.writers import WriterPool

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
    restart: int
    suspended: bool
    held: bool
    deployment_status: str
    job_status: str
    message: str
    job_id: str
    dashboard_url: str
    deleting: bool
    cluster: str = ""
    """KubeRay's Ray cluster of the RayJob (``status.rayClusterName``): its head pod's label."""

    @property
    def phase(self) -> RunPhase:
        """KubeRay's deployment status says where the cluster is; its job status where the
        job is, once submitted."""
        deployment = self.deployment_status
        if self.held and deployment in ("", "Suspended"):
            return RunPhase.HELD
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
        if self.phase is RunPhase.HELD:
            said = f"RayJob {self.name} suspended: held until its planned start"
        elif self.suspended and self.deployment_status in ("", "Suspended", "Suspending"):
            said = f"RayJob {self.name} suspended: waiting for admission"
        else:
            state = "/".join(s for s in (self.deployment_status, self.job_status) if s)
            said = f"RayJob {self.name} {state or 'created'}"
        return f"{said}: {self.message}" if self.message else said


def rayjob_view(raw: dict[str, Any]) -> RayJobView:
    meta = raw["metadata"]
    labels = meta.get("labels") or {}
    status = raw.get("status") or {}
    suspended = bool((raw.get("spec") or {}).get("suspend"))
    return RayJobView(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        job=labels.get(rayjob.JOB_LABEL, ""),
        revision=labels.get(pods.REVISION_LABEL, ""),
        attempt=int(labels.get(rayjob.ATTEMPT_LABEL) or 0),
        restart=int(labels.get(rayjob.RESTART_LABEL) or 0),
        suspended=suspended,
        held=suspended and labels.get(rayjob.HELD_LABEL) == "true",
        deployment_status=status.get("jobDeploymentStatus") or "",
        job_status=status.get("jobStatus") or "",
        message=status.get("message") or "",
        job_id=status.get("jobId") or "",
        dashboard_url=status.get("dashboardURL") or "",
        deleting=bool(meta.get("deletionTimestamp")),
        cluster=status.get("rayClusterName") or "",
    )


@dataclass(frozen=True)
class _Started:
    """A run ``start`` or ``hold`` applied, until the informer shows its RayJob as applied."""

    run: TrainingRun
    name: str


@dataclass
class _Names:
    """RayJob names in use: the highest restart index this process gave each attempt (job key,
    revision, attempt), and the RayJobs asked to go that the informer may still show."""

    restarts: dict[tuple[str, str, int], int] = field(default_factory=dict)
    stopping: set[Key] = field(default_factory=set)


class KubeRayJobs:
    """Runs each TrainingJob as KubeRay RayJobs, one per run."""

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
        self._started: dict[str, _Started] = {}
        self._names = _Names()
        self._jobs: dict[Key, str] = {}  # RayJob -> its TrainingJob, for deletions
        # One writer: a stop and the start after it are applied in that order.
        self._writer = WriterPool(1, "kapell-rayjobs")
        self._lock = threading.Lock()
        self.writes = 0
        self.informer: Informer[RayJobView] = Informer(
            client, RayJob, rayjob_view, self._changed, namespace=namespace, labels=pods.MANAGED_BY
        )
        self.logs = DriverLogs(client, on_change)

    def close(self) -> None:
        """Drop queued writes (the next leader applies them again) and log reads."""
        self._writer.close()
        self.logs.close()

    def _changed(self, key: Key, view: RayJobView | None) -> None:
        with self._lock:
            job = view.job if view is not None else self._jobs.pop(key, "")
            if view is not None:
                self._jobs[key] = view.job
            else:
                self._names.stopping.discard(key)
                self.logs.forget(key)
        if job:
            self._on_change(f"TrainingJob/{key[0]}/{job}")

    def _views(self, job_key: str) -> list[RayJobView]:
        _, namespace, name = job_key.split("/", 2)
        return sorted(
            (v for v in self.informer.items() if v.namespace == namespace and v.job == name),
            key=lambda v: (v.attempt, v.restart),
        )

    def _live(self, job_key: str) -> list[RayJobView]:
        """The job's RayJobs not on their way out, oldest run first; the lock is held."""
        return [
            v
            for v in self._views(job_key)
            if not v.deleting and (v.namespace, v.name) not in self._names.stopping
        ]

    # -- TrainingBackend ------------------------------------------------------------------
    def run(self, job_key: str) -> TrainingRun | None:
        with self._lock:
            views = self._live(job_key)
            started = self._started.get(job_key)
        if started is not None:
            seen = next((v for v in views if v.name == started.name), None)
            released = started.run.phase is not RunPhase.HELD
            if seen is None or (seen.held and released):
                return started.run  # applied; the informer has not seen it yet
            newest: RayJobView | None = seen
        else:
            newest = views[-1] if views else None
        if newest is None:
            return None
        run = TrainingRun(
            job_key,
            newest.revision,
            newest.attempt,
            newest.phase,
            newest.describe(),
            submission_id=newest.job_id,
            dashboard_url=newest.dashboard_url,
        )
        rayjob_key = (newest.namespace, newest.name)
        for record in self.logs.records(job_key, rayjob_key, newest.cluster, run.phase.finished):
            run = replace(run, **progress_changes(run, record))
        return run

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Apply the run's objects (releasing the attempt's held RayJob, if there is one);
        earlier runs' RayJobs are deleted."""
        self._apply(job, revision, attempt, held=False)

    def hold(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Apply the run's objects with the RayJob suspended, held until ``start``."""
        self._apply(job, revision, attempt, held=True)

    def stop(self, job_key: str) -> None:
        with self._lock:
            started = self._started.pop(job_key, None)
            names = {v.name for v in self._views(job_key)}
            if started is not None:  # perhaps not seen by the informer yet
                names.add(started.name)
            namespace = job_key.split("/", 2)[1]
            self._names.stopping.update((namespace, n) for n in names)
        self._writer.submit(self._delete_names, namespace, sorted(names))

    def _apply(self, job: TrainingJob, revision: str, attempt: int, held: bool) -> None:
        stored = self._stored(job.key)
        if stored is None:
            return  # deleted meanwhile: the next reconcile sees it gone
        with self._lock:
            restart = self._restart(job.key, revision, attempt)
            name = rayjob.rayjob_name(job.metadata.name, revision, attempt, restart)
            if held:
                run = TrainingRun(
                    job.key, revision, attempt, RunPhase.HELD,
                    f"RayJob {name} created suspended: held until its planned start",
                )  # fmt: skip
            else:
                run = TrainingRun(
                    job.key, revision, attempt, RunPhase.STARTING, f"creating RayJob {name}"
                )
            self._started[job.key] = _Started(run, name)
        options = replace(self.options, suspend=held)
        self._writer.submit(self._apply_run, job, run, name, restart, stored.uid, options)

    def _restart(self, job_key: str, revision: str, attempt: int) -> int:
        """The attempt's RayJob still standing (a held one, released now), else a new one:
        restart 0 for a new attempt, the next index after a stop; the lock is held."""
        for view in reversed(self._live(job_key)):
            if (view.revision, view.attempt) == (revision, attempt):
                return view.restart
        of = (job_key, revision, attempt)
        used = [v.restart for v in self._views(job_key) if (v.revision, v.attempt) == of[1:]]
        if of in self._names.restarts:
            used.append(self._names.restarts[of])
        restart = max(used) + 1 if used else 0
        self._names.restarts[of] = restart
        return restart

    # -- writes (on the writer thread) ----------------------------------------------------
    def _apply_run(
        self, job: TrainingJob, run: TrainingRun, name: str, restart: int, uid: str,
        options: RayJobOptions,
    ) -> None:  # fmt: skip
        try:
            pools = list_pools(self._client)  # their node groups: where spot and on-demand are
            if options.gang == "kueue":
                self._apply_all(rayjob.kueue_objects(pools, [job.metadata.namespace]))
            objects = rayjob.job_objects(
                job, run.revision, run.attempt, uid, pools, options, restart
            )
            self._apply_all(objects)
            stale = [v.name for v in self._views(job.key) if v.name != name and not v.deleting]
            self._delete_names(job.metadata.namespace, stale)
            return
        except ApiError as exc:
            failed = replace(run, phase=RunPhase.FAILED, message=_refused(exc))
        except (httpx.HTTPError, OSError) as exc:
            message = f"the apiserver could not be reached: {exc}"
            failed = replace(run, phase=RunPhase.FAILED, message=message)
        with self._lock:
            started = self._started.get(job.key)
            if started is None or started.run is not run:
                return  # stopped or restarted meanwhile
            if run.phase is RunPhase.HELD:
                # Nothing runs yet: the job's next reconcile holds it again, and its release
                # applies it anyway; a failure here would spend one of its attempts.
                del self._started[job.key]
                log.warning("held RayJob %s not made: %s", name, failed.message)
                return
            self._started[job.key] = _Started(failed, name)
        self._on_change(job.key)

    def _apply_all(self, manifests: Sequence[dict[str, Any]]) -> None:
        for manifest in manifests:
            server_side_apply(self._client, _RESOURCES[manifest["kind"]], manifest)
            with self._lock:
                self.writes += 1

    def _delete_names(self, namespace: str, names: Sequence[str]) -> None:
        for name in names:
            try:
                self._client.delete(
                    RayJob, name, namespace=namespace, cascade=CascadeType.BACKGROUND
                )
            except ApiError as exc:
                if exc.status.code != 404:
                    log.warning("RayJob %s/%s not deleted: %s", namespace, name, exc)
            except (httpx.HTTPError, OSError) as exc:  # the job's next reconcile deletes it again
                log.warning("RayJob %s/%s not deleted: %s", namespace, name, exc)


def list_pools(client: Client) -> list[GPUPool]:
    """Every GPUPool in the cluster (none where kapell's CRDs lack GPUPool: default labels)."""
    try:
        listed: list[Any] = list(client.list(GPUPoolResource, namespace=ALL_NS))
    except ApiError as exc:
        if exc.status.code == 404:
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


def _refused(exc: ApiError) -> str:
    """The apiserver's refusal in words a user can act on."""
    if exc.status.code == 404:
        return (
            f"{exc.status.message}: is KubeRay installed (the RayJob CRD, ray.io/v1)? With "
            "Kueue gang admission also Kueue's CRDs, or start the operator with "
            "--training-gang none"
        )
    return f"the apiserver refused the RayJob: {exc.status.message}"
