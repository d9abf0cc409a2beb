"""The operator's TrainingJob side: the local mode's ``TrainingJobController`` over RayJobs.

Wired only where the cluster has the TrainingJob CRD. Without KubeRay's RayJob CRD at start the
RayJob informer is not waited for: it lists again until the CRD is installed, and meanwhile a
TrainingJob fails with a message saying so. Gang admission: ``auto`` is Kueue where its CRDs
are installed at start, else none.

The controller runs the same ``Scheduler`` as ``kapell up`` (``control.training_schedule``):
a deferred job's RayJob is made suspended and released at its planned start, and a spot
decision places (or, moved, re-creates) the RayJob's worker groups. Spot availability is the
``--spot-availability`` file where one is given, else the GPUPools' spot nodes
(``SpotNodes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lightkube import Client

    from kapell.api import TrainingJob
    from kapell.backends.kubernetes.informer import Informer
    from kapell.backends.kubernetes.inventory import NodeView
    from kapell.backends.kubernetes.training import KubeRayJobs
    from kapell.control.training import TrainingJobController
    from kapell.control.training_schedule import Feeds

log = logging.getLogger(__name__)

GangChoice = Literal["auto", "kueue", "volcano", "none"]


@dataclass
class TrainingPlane:
    controller: TrainingJobController
    backend: KubeRayJobs
    informers: list[Informer[Any]]
    """To start and to wait for before reconciling."""
    late: list[Informer[Any]]
    """To start, not to wait for: their kind's CRD may come later."""
    object_keys: Callable[[], list[str]]
    jobs: Callable[[], list[TrainingJob]]
    """Every TrainingJob, from the informer's cache (the console reads them)."""


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
    feeds: Feeds | None = None,
    nodes: Callable[[], Iterable[NodeView]] | None = None,
) -> TrainingPlane | None:
    """The TrainingJob controller and its informers, or None without the TrainingJob CRD.

    ``feeds``: what the scheduler observes (its clock, spot availability, carbon intensity);
    without spot availability in them, ``nodes`` (the operator's node informer) gives it."""
    from kapell.api import TrainingJob
    from kapell.backends.kubernetes.rayjob import RayJobOptions
    from kapell.backends.kubernetes.spot_nodes import SpotNodes
    from kapell.backends.kubernetes.store import (
        KubeStore,
        TrainingJobResource,
        parse_training_job,
    )
    from kapell.backends.kubernetes.training import KubeRayJobs
    from kapell.control.training import TrainingJobController
    from kapell.control.training_schedule import Feeds

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
    late: list[Informer[Any]] = []
    if crd_installed(client, "rayjobs.ray.io"):
        informers.append(backend.informer)
    else:
        log.warning("KubeRay's RayJob CRD is not installed: TrainingJobs fail until it is")
        late.append(backend.informer)
    feeds = feeds or Feeds()
    if feeds.spot_available is None and nodes is not None:
        spot = SpotNodes(client, nodes)
        late.append(spot.pools)  # kapell's CRDs without GPUPool: the default spot label
        feeds = replace(feeds, spot_available=spot)
    log.info("TrainingJobs run as KubeRay RayJobs, gang admission: %s", gang)
    controller = TrainingJobController(store, backend, timestamp, feeds)
    return TrainingPlane(controller, backend, informers, late, store.object_keys, store.resources)
