"""The operator's TrainingJob side: the local mode's ``TrainingJobController`` over RayJobs.

Wired only where the cluster has the TrainingJob CRD; the RayJob informer runs only where
KubeRay's CRD is installed (without it a TrainingJob fails with a message saying so). Gang
admission: ``auto`` is Kueue where its CRDs are installed, else none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lightkube import Client

    from kapell.backends.kubernetes.informer import Informer
    from kapell.backends.kubernetes.training import KubeRayJobs
    from kapell.control.training import TrainingJobController

log = logging.getLogger(__name__)

GangChoice = Literal["auto", "kueue", "volcano", "none"]


@dataclass
class TrainingPlane:
    controller: TrainingJobController
    backend: KubeRayJobs
    informers: list[Informer[Any]]
    object_keys: Callable[[], list[str]]


def crd_installed(client: Client, name: str) -> bool:
    from lightkube import ApiError
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    try:
        client.get(CustomResourceDefinition, name)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    return True


def training_plane(
    client: Client,
    enqueue: Callable[[str], None],
    namespace: str | None,
    gang: GangChoice,
    timestamp: Callable[[], str],
) -> TrainingPlane | None:
    """The TrainingJob controller and its informers, or None without the TrainingJob CRD."""
    from kapell.api import TrainingJob
    from kapell.backends.kubernetes.rayjob import RayJobOptions
    from kapell.backends.kubernetes.store import (
        KubeStore,
        TrainingJobResource,
        parse_training_job,
    )
    from kapell.backends.kubernetes.training import KubeRayJobs
    from kapell.control.training import TrainingJobController

    if not crd_installed(client, "trainingjobs.kapell.dev"):
        log.warning("the TrainingJob CRD is not installed: TrainingJobs are not reconciled")
        return None
    if gang == "auto":
        gang = "kueue" if crd_installed(client, "clusterqueues.kueue.x-k8s.io") else "none"
    store = KubeStore(
        client, enqueue, namespace, TrainingJob, TrainingJobResource, parse_training_job
    )
    backend = KubeRayJobs(client, store.stored, enqueue, namespace, RayJobOptions(gang=gang))
    informers: list[Informer[Any]] = [store.informer]
    if crd_installed(client, "rayjobs.ray.io"):
        informers.append(backend.informer)
    else:
        log.warning("KubeRay's RayJob CRD is not installed: TrainingJobs will fail to start")
    log.info("TrainingJobs run as KubeRay RayJobs, gang admission: %s", gang)
    controller = TrainingJobController(store, backend, timestamp)
    return TrainingPlane(controller, backend, informers, store.object_keys)
