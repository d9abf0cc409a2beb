"""The TrainingJob controller's scheduling on an injected clock: spot versus on-demand under a
deadline (availability from a file the test flips, as `kapell up --spot-availability` reads
it) and the carbon-aware start (intensity from a real Electricity Maps file).

Runs are the in-memory table of ``test_training_controller``; the store is real SQLite.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.clock import ManualClock
from tests.unit.control.test_training_controller import RunTable

from kapell.api import TrainingJob
from kapell.api.loader import load_text
from kapell.api.training import RunPhase
from kapell.backends.local.store import SQLiteStore
from kapell.cli.training_feeds import intensity_series, spot_availability
from kapell.control.training import TrainingJobController
from kapell.control.training_schedule import Feeds
from kapell.policy.energy import default_power_models

INTENSITY = (
    Path(__file__).resolve().parents[3]
    / "../shared/data/carbon-intensity/electricitymaps/DE_2022_hourly.csv"
)

SPOT_JOB = """\
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: s}
spec:
  entrypoint: python train.py
  workerGroupSpecs: [{groupName: cpu, replicas: 2, resources: {cpu: "1"}, spot: true}]
  deadline: 4h
  expectedDuration: 2h
  restartOverhead: 5m
"""

DEFER_JOB = """\
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: d}
spec:
  entrypoint: python train.py
  workerGroupSpecs: [{groupName: cpu, replicas: 2, resources: {cpu: "1"}}]
  deadline: 24h
  expectedDuration: 3h
  deferrable: true
"""


class JobTable(RunTable):
    """The run table, keeping the job each run was started with (its capacity)."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[TrainingJob] = []

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None:
        self.jobs.append(job)
        super().start(job, revision, attempt)


def apply(store: SQLiteStore, text: str) -> str:
    (job,) = load_text(text)
    store.apply(job)
    return job.key


def status(store: SQLiteStore, key: str) -> dict[str, object]:
    job = store.get(key)
    assert isinstance(job, TrainingJob)
    return job.status.model_dump(by_alias=True)


def spot_of(job: TrainingJob) -> bool:
    return job.spec.worker_group_specs[0].spot


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "state.db")


def test_spot_moves_between_capacities_as_availability_and_the_deadline_demand(
    store: SQLiteStore, tmp_path: Path
) -> None:
    flag = tmp_path / "spot"
    flag.write_text("up\n")
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    runs = JobTable()
    feeds = Feeds(clock=clock, spot_available=spot_availability(flag, clock.now))
    controller = TrainingJobController(store, runs, lambda: "t", feeds)
    key = apply(store, SPOT_JOB)

    controller.reconcile(key)  # spot is up, the deadline far: start on spot
    assert len(runs.jobs) == 1 and spot_of(runs.jobs[0])
    assert status(store, key)["capacity"] == "spot"
    runs.move(key, phase=RunPhase.RUNNING, step=10)
    controller.reconcile(key)
    clock.advance(10)
    controller.reconcile(key)
    assert status(store, key)["trainedSeconds"] == pytest.approx(600)

    # Spot reclaimed at 11 min: 10 min done, ahead of the uniform line (2 h over 4 h): wait.
    flag.write_text("down\n")
    clock.advance(1)
    controller.reconcile(key)
    assert runs.stops == [key]
    after = status(store, key)
    assert (after["phase"], after["capacity"]) == ("Pending", "wait")
    assert "ahead of schedule" in str(after["capacityReason"])

    # At 30 min the 10 min done is behind the line (15 min): on-demand.
    clock.advance(19)
    controller.reconcile(key)
    assert len(runs.jobs) == 2 and not spot_of(runs.jobs[1])
    after = status(store, key)
    assert after["capacity"] == "on_demand"
    assert "behind the uniform-progress line" in str(after["capacityReason"])
    runs.move(key, phase=RunPhase.RUNNING, checkpoints=1)
    controller.reconcile(key)

    # Spot back: the spot period seen (11 min) repays a switch, so move to spot, but only
    # after the run's next checkpoint.
    flag.write_text("up\n")
    clock.advance(1)
    controller.reconcile(key)
    assert len(runs.jobs) == 2 and runs.stops == [key]
    clock.advance(1)
    runs.move(key, checkpoints=2)
    controller.reconcile(key)
    assert runs.stops == [key, key] and spot_of(runs.jobs[2])
    assert status(store, key)["capacity"] == "spot"

    # 13 min trained of 2 h. The new spot run never gets going, and spot is lost at 127.5 min:
    # 112.5 min left for 107 min of work and a 5 min restart, too little to wait: on-demand.
    assert status(store, key)["trainedSeconds"] == pytest.approx(13 * 60)
    flag.write_text("down\n")
    clock.advance(127.5 - 32)
    controller.reconcile(key)
    after = status(store, key)
    assert after["capacity"] == "on_demand" and not spot_of(runs.jobs[3])
    assert "only on-demand still meets the deadline" in str(after["capacityReason"])


def test_a_job_without_deadline_or_spot_group_is_left_to_its_spec(
    store: SQLiteStore, tmp_path: Path
) -> None:
    flag = tmp_path / "spot"
    flag.write_text("down")
    clock = ManualClock(1e9)
    runs = JobTable()
    feeds = Feeds(clock=clock, spot_available=spot_availability(flag, clock.now))
    key = apply(store, SPOT_JOB.replace("spot: true", "spot: false"))
    TrainingJobController(store, runs, lambda: "t", feeds).reconcile(key)
    assert len(runs.jobs) == 1 and status(store, key)["capacity"] == ""


def _hourly(path: Path) -> list[tuple[float, float]]:
    """(epoch second, LCA intensity) rows, read here independently of kapell's reader."""
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        (
            datetime.fromisoformat(r["Datetime (UTC)"].replace("Z", "+00:00"))
            .replace(tzinfo=UTC)
            .timestamp(),
            float(r["Carbon Intensity gCO₂eq/kWh (LCA)"]),
        )
        for r in rows
    ]


@pytest.mark.skipif(not INTENSITY.exists(), reason="shared carbon-intensity data not present")
def test_a_deferrable_job_waits_for_the_planned_start_on_the_intensity_file(
    store: SQLiteStore,
) -> None:
    rows = _hourly(INTENSITY)
    submit = rows[24 * 40][0] + 600  # 10 min into an hour of 10 February 2022
    window = [rows[i][1] for i in range(24 * 40, 24 * 41)]
    # Starts at hour 0 (now) or hours 1..21 after it, 3 h each, all ending by hour 24.
    sums = [sum(window[s : s + 3]) for s in range(0, 22)]
    best = min(range(len(sums)), key=lambda s: (sums[s], s))
    assert best > 0, "the chosen day must make the job wait for the test to mean anything"

    clock = ManualClock(submit)
    runs = JobTable()
    feeds = Feeds(clock=clock, carbon=intensity_series(str(INTENSITY)))
    controller = TrainingJobController(store, runs, lambda: "t", feeds)
    key = apply(store, DEFER_JOB)
    requeue = controller.reconcile(key)
    held = status(store, key)
    assert runs.jobs == [] and held["phase"] == "Pending"
    assert runs.holds == [(held["revision"], 0)]  # prepared held (a suspended RayJob)
    start_s = rows[24 * 40 + best][0]
    planned = datetime.fromisoformat(str(held["plannedStart"]).replace("Z", "+00:00"))
    assert planned.timestamp() == start_s
    kw = 2 * default_power_models().cpu_core.peak_w / 1000
    assert held["plannedGCo2"] == pytest.approx(sums[best] * kw, abs=0.1)
    assert held["atOnceGCo2"] == pytest.approx(sums[0] * kw, abs=0.1)
    assert held["plannedGCo2"] < held["atOnceGCo2"]  # type: ignore[operator]
    assert "deferred until" in str(held["message"])
    assert requeue is not None and 0 < requeue <= 3000  # looks again at the next hour

    clock.now = start_s - 1
    controller.reconcile(key)
    assert runs.jobs == [] and len(runs.holds) == 1  # held once, not made again
    clock.now = start_s
    controller.reconcile(key)
    assert len(runs.jobs) == 1 and status(store, key)["phase"] == "Pending"
    assert runs.holds == [(held["revision"], 0)] and runs.stops == []  # released, not remade


@pytest.mark.skipif(not INTENSITY.exists(), reason="shared carbon-intensity data not present")
def test_a_deferrable_job_starts_at_once_when_the_source_does_not_cover_now(
    store: SQLiteStore,
) -> None:
    runs = JobTable()
    feeds = Feeds(
        clock=ManualClock(datetime(2030, 1, 1, tzinfo=UTC).timestamp()),
        carbon=intensity_series(str(INTENSITY)),
    )
    key = apply(store, DEFER_JOB)
    TrainingJobController(store, runs, lambda: "t", feeds).reconcile(key)
    assert len(runs.jobs) == 1
    assert "not deferred" in str(status(store, key)["message"])
