"""The operator's TrainingJob scheduling on the real apiserver, on an injected clock.

The training plane runs in the test's process, built as ``kapell operator`` builds it
(``cli.operator_training.training_plane``) with the same feeds its ``--carbon-intensity`` and
``--spot-availability`` options give, so the test owns the clock (the session's operator is
stopped meanwhile). A deferrable job's RayJob is
made suspended and held, and released at the carbon plan's start; a spot job's RayJob places its
workers on the GPUPool's spot group, and when spot is reclaimed the RayJob goes and is made
again (``-r1``) with its workers on the on-demand group once the deadline calls for it. Neither
KubeRay's operator nor Kueue runs here: the test writes the RayJob status KubeRay would write
(a stand-in, named as such); ``test_kuberay.py`` runs KubeRay's real operator.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubeobjects import eventually
from lightkube import ApiError, Client
from operators import OperatorProcess, apply, as_kuberay
from tests.clock import ManualClock

from kapell.backends.kubernetes import rayjob
from kapell.backends.kubernetes.informer import wait_synced
from kapell.backends.kubernetes.store import TrainingJobResource
from kapell.backends.kubernetes.training import RayJob
from kapell.cli.operator import kube_client
from kapell.cli.operator_training import TrainingPlane, training_plane
from kapell.cli.training_feeds import intensity_series, spot_availability
from kapell.control.training_schedule import Feeds, epoch, stamp
from kapell.devcluster import DevCluster

INTENSITY = (
    Path(__file__).resolve().parents[2]
    / "../shared/data/carbon-intensity/electricitymaps/DE_2022_hourly.csv"
)
WAIT_S = 30.0


@pytest.fixture
def plane_of(
    ecosystem_crds: list[str], operator: OperatorProcess, dev_cluster: DevCluster, namespace: str
) -> Iterator[Callable[[Feeds], TrainingPlane]]:
    """Start the operator's training plane over the test's namespace with the given feeds.

    It stands in for the session's ``kapell operator``, which is stopped meanwhile (it gives
    its Lease up) so that one controller acts on the test's jobs, and started again after."""
    operator.kill(signal.SIGTERM)
    started: list[TrainingPlane] = []

    def start(feeds: Feeds) -> TrainingPlane:
        clock = feeds.clock
        plane = training_plane(
            kube_client(dev_cluster.kubeconfig), lambda key: None, namespace, "none",
            lambda: stamp(clock()), feeds,
        )  # fmt: skip
        assert plane is not None, "the TrainingJob CRD is installed by kapell_crds"
        started.append(plane)
        for informer in [*plane.informers, *plane.late]:
            informer.start()
        wait_synced(plane.informers, WAIT_S)
        return plane

    try:
        yield start
    finally:
        for plane in started:
            for informer in [*plane.informers, *plane.late]:
                informer.stop()
            plane.backend.close()
        seen = len(operator.text())  # its log already says "watching" from before
        operator.start()
        eventually(lambda: "watching" in operator.text()[seen:] or None,
                   "the session's operator leading again", 60)  # fmt: skip


def _job(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"entrypoint": "python train.py", **spec},
    }


def _status(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    try:
        found = kube.get(TrainingJobResource, name, namespace=namespace).to_dict()
    except ApiError:
        return {}
    return dict(found.get("status") or {})


def _rayjobs(kube: Client, namespace: str) -> list[dict[str, Any]]:
    found = [r.to_dict() for r in kube.list(RayJob, namespace=namespace)]
    return [r for r in found if not r["metadata"].get("deletionTimestamp")]


def _reconciled(plane: TrainingPlane, key: str, probe: Callable[[], Any], what: str) -> Any:
    """Reconcile (the clock standing still) until ``probe`` sees what it waits for."""

    def step() -> Any:
        plane.controller.reconcile(key)
        return probe()

    return eventually(step, what, WAIT_S)


def _worker(found: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = found["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    return template


def _capacity_values(template: dict[str, Any]) -> set[str]:
    """The capacity-type values the template's required node affinity allows."""
    affinity = template["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return {
        value
        for term in terms
        for expression in term["matchExpressions"]
        if expression["key"] == "karpenter.sh/capacity-type"
        for value in expression["values"]
    }


@pytest.mark.skipif(not INTENSITY.exists(), reason="shared carbon-intensity data not present")
def test_a_deferred_job_is_a_suspended_rayjob_released_at_its_planned_start(
    plane_of: Callable[[Feeds], TrainingPlane], kubectl: Callable[..., str], kube: Client,
    namespace: str,
) -> None:  # fmt: skip
    # 10 February 2022, 00:10 UTC: the German grid is cleaner later that day (the unit test
    # of the deferral checks the plan itself against the file).
    clock = ManualClock(datetime(2022, 2, 10, 0, 10, tzinfo=UTC).timestamp())
    plane = plane_of(Feeds(clock=clock, carbon=intensity_series(str(INTENSITY))))
    workers = [{"groupName": "cpu", "replicas": 2, "resources": {"cpu": "1", "memory": "1Gi"}}]
    apply(kubectl, _job("later", namespace, workerGroupSpecs=workers, deadline="24h",
                        expectedDuration="3h", deferrable=True))  # fmt: skip
    key = f"TrainingJob/{namespace}/later"
    eventually(lambda: key in plane.object_keys() or None, "the job", WAIT_S)

    held = _reconciled(
        plane, key, lambda: next(iter(_rayjobs(kube, namespace)), None), "the held RayJob"
    )
    assert held["spec"]["suspend"] is True
    assert held["metadata"]["labels"][rayjob.HELD_LABEL] == "true"
    status = eventually(
        lambda: _status(kube, "later", namespace).get("plannedStart") and _status(
            kube, "later", namespace), "the planned start in the status", WAIT_S,
    )  # fmt: skip
    planned = epoch(status["plannedStart"])
    assert planned > clock.now and status["phase"] == "Pending"
    assert 0 < status["plannedGCo2"] < status["atOnceGCo2"]
    assert "deferred until" in status["message"]

    clock.now = planned - 1  # still held: reconciled, the RayJob stays as it is
    for _ in range(3):
        plane.controller.reconcile(key)
    (still,) = _rayjobs(kube, namespace)
    assert still["metadata"]["uid"] == held["metadata"]["uid"] and still["spec"]["suspend"]

    clock.now = planned
    released = _reconciled(
        plane, key,
        lambda: next((r for r in _rayjobs(kube, namespace) if not r["spec"]["suspend"]), None),
        "the RayJob released (suspend: false)",
    )  # fmt: skip
    assert released["metadata"]["uid"] == held["metadata"]["uid"]  # the same RayJob, patched
    assert rayjob.HELD_LABEL not in released["metadata"]["labels"]
    name = released["metadata"]["name"]
    as_kuberay(kube, name, namespace, "Running", "RUNNING")
    running = _reconciled(
        plane, key,
        lambda: ((s := _status(kube, "later", namespace)).get("phase") == "Running" and s) or None,
        "the job running",
    )  # fmt: skip
    assert running["plannedStart"] == status["plannedStart"]


def test_a_spot_reclaim_moves_the_rayjobs_workers_to_on_demand_nodes(
    plane_of: Callable[[Feeds], TrainingPlane], kubectl: Callable[..., str], kube: Client,
    namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    flag = tmp_path / "spot"  # what `kapell operator --spot-availability FILE` reads
    flag.write_text("up\n")
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    plane = plane_of(Feeds(clock=clock, spot_available=spot_availability(flag, clock.now)))
    pool = {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": "fleet", "namespace": namespace},
        "spec": {"nodes": [
            {"gpuModel": "H100", "count": 2},
            {"gpuModel": "H100", "count": 2, "spot": True,
             "taints": [{"key": "example.com/spot", "value": "true"}]},
        ]},
    }  # fmt: skip
    workers = [{"groupName": "w", "replicas": 2, "spot": True,
                "resources": {"cpu": "1", "memory": "1Gi"}}]  # fmt: skip
    apply(kubectl, pool, _job("spotty", namespace, workerGroupSpecs=workers, deadline="4h",
                              expectedDuration="2h", restartOverhead="5m"))  # fmt: skip
    key = f"TrainingJob/{namespace}/spotty"
    eventually(lambda: key in plane.object_keys() or None, "the job", WAIT_S)

    first = _reconciled(plane, key, lambda: next(iter(_rayjobs(kube, namespace)), None),
                        "the RayJob on spot")  # fmt: skip
    template = _worker(first)
    assert template["metadata"]["labels"][rayjob.CAPACITY_LABEL] == "spot"
    assert _capacity_values(template) == {"spot"}
    assert {"key": "example.com/spot", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in template["spec"]["tolerations"]  # fmt: skip
    name = first["metadata"]["name"]
    as_kuberay(kube, name, namespace, "Running", "RUNNING")
    _reconciled(
        plane, key,
        lambda: _status(kube, "spotty", namespace).get("phase") == "Running" or None,
        "the job running on spot",
    )  # fmt: skip
    clock.advance(10)
    plane.controller.reconcile(key)

    # Spot reclaimed after 11 min: 10 min trained puts the job ahead of the uniform-progress
    # line (2 h over 4 h), so it waits for spot; its RayJob goes.
    flag.write_text("down\n")
    clock.advance(1)
    _reconciled(plane, key, lambda: _rayjobs(kube, namespace) == [] or None, "the RayJob gone")
    waiting = eventually(
        lambda: ((s := _status(kube, "spotty", namespace)).get("capacity") == "wait" and s) or None,
        "the job waiting for spot", WAIT_S,
    )  # fmt: skip
    assert waiting["phase"] == "Pending" and "ahead of schedule" in waiting["capacityReason"]

    # At 30 min the 10 min trained is behind the line (15 min): on-demand, a new RayJob.
    clock.advance(19)
    second = _reconciled(plane, key, lambda: next(iter(_rayjobs(kube, namespace)), None),
                         "the RayJob on on-demand")  # fmt: skip
    assert second["metadata"]["name"] == f"{name}-r1"
    template = _worker(second)
    assert template["metadata"]["labels"][rayjob.CAPACITY_LABEL] == "on-demand"
    assert _capacity_values(template) == {"on-demand"}
    assert "tolerations" not in template["spec"]
    moved = eventually(
        lambda: ((s := _status(kube, "spotty", namespace)).get("capacity") == "on_demand" and s)
        or None, "the status on on-demand", WAIT_S,
    )  # fmt: skip
    assert "behind the uniform-progress line" in moved["capacityReason"]
