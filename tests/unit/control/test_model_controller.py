"""The Model controller's rollout and scaling steps, against an in-memory replica table.

The table stands in for real processes (those are covered in tests/integration); here it lets
each reconcile step be checked exactly: surge one, never drop below the ready count.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kapell.api import Model
from kapell.api.loader import load_text
from kapell.api.replica import Replica, ReplicaPhase
from kapell.backends.local.store import SQLiteStore
from kapell.control.model import ModelController, revision_of
from kapell.control.scaling import DemandScaler

SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: m}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim}
  scaling: {minReplicas: MIN, maxReplicas: 4, scaleToZeroAfter: 30s}
"""


def model(min_replicas: int = 2, args: tuple[str, ...] = ()) -> Model:
    text = SPEC.replace("MIN", str(min_replicas))
    if args:
        text = text.replace("{name: sim}", "{name: sim, args: [" + ", ".join(args) + "]}")
    [m] = load_text(text)
    assert isinstance(m, Model)
    return m


class ReplicaTable:
    """In-memory replicas: started ones are Starting until the test marks them ready."""

    def __init__(self) -> None:
        self.rows: dict[str, Replica] = {}
        self.count = 0

    def replicas(self, model_key: str) -> list[Replica]:
        return [r for r in self.rows.values() if r.model_key == model_key]

    def start_replica(self, model: Model, revision: str) -> Replica:
        self.count += 1
        replica = Replica(f"r{self.count}", model.key, revision, ReplicaPhase.STARTING)
        self.rows[replica.id] = replica
        return replica

    def stop_replica(self, replica_id: str) -> None:
        self.rows.pop(replica_id, None)

    def make_ready(self) -> None:
        for key, r in self.rows.items():
            self.rows[key] = replace(r, phase=ReplicaPhase.READY, url=f"http://{r.id}")

    def ready(self) -> int:
        return sum(r.ready for r in self.rows.values())


@pytest.fixture
def setup(tmp_path: Path) -> tuple[SQLiteStore, ReplicaTable, ModelController, DemandScaler]:
    store = SQLiteStore(tmp_path / "state.db")
    table = ReplicaTable()
    scaler = DemandScaler()
    clock = [0.0]
    controller = ModelController(store, table, scaler, lambda: clock[0], lambda: "t")
    return store, table, controller, scaler


def test_scales_up_to_min_replicas_and_reports_ready(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, _ = setup
    m = model(2)
    store.apply(m)
    controller.reconcile(m.key)
    assert len(table.rows) == 2
    table.make_ready()
    controller.reconcile(m.key)
    stored = store.get(m.key)
    assert isinstance(stored, Model)
    assert stored.status.ready_replicas == 2
    ready = next(c for c in stored.status.conditions if c.type == "Ready")
    assert ready.status == "True"


def test_changed_spec_rolls_one_at_a_time_without_losing_ready_replicas(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, _ = setup
    old = model(2)
    store.apply(old)
    controller.reconcile(old.key)
    table.make_ready()
    new = model(2, args=("--speedup", "'2'"))
    assert revision_of(new) != revision_of(old)
    store.apply(new)
    for _ in range(20):
        controller.reconcile(new.key)
        assert table.ready() >= 2, "a rollout step dropped below the ready count"
        assert len(table.rows) <= 3, "surged more than one replica"
        table.make_ready()
    revisions = {r.revision for r in table.rows.values()}
    assert revisions == {revision_of(new)} and len(table.rows) == 2


def test_scale_from_zero_on_demand_then_back_to_zero(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, _, scaler = setup
    clock = [0.0]
    controller = ModelController(store, table, scaler, lambda: clock[0], lambda: "t")
    m = model(0)
    store.apply(m)
    controller.reconcile(m.key)
    assert table.rows == {}
    scaler.note_demand(m.key, 1.0)
    clock[0] = 2.0
    controller.reconcile(m.key)
    assert len(table.rows) == 1
    clock[0] = 40.0  # idle for longer than scaleToZeroAfter (30s)
    controller.reconcile(m.key)
    assert table.rows == {}


def test_deleted_model_stops_its_replicas(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, _ = setup
    m = model(1)
    store.apply(m)
    controller.reconcile(m.key)
    assert store.delete(m.key)
    assert controller.reconcile(m.key) is None
    assert table.rows == {}
