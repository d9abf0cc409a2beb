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
from kapell.control.scaling import PolicyScaler
from kapell.policy.autoscale import DemandSample

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
    text = text.replace("maxReplicas: 4", f"maxReplicas: {max(4, min_replicas)}")
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


class Demand:
    """What the gateway's meter would report: settable queue depth and request count."""

    def __init__(self) -> None:
        self.queue_depth = 0
        self.requests = 0

    def __call__(self, model: Model, ready: int) -> DemandSample:
        return DemandSample(
            tokens_total=self.requests * 100.0, requests_total=self.requests,
            queue_depth=self.queue_depth, ready_replicas=ready,
        )  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path) -> tuple[SQLiteStore, ReplicaTable, ModelController, Demand]:
    store = SQLiteStore(tmp_path / "state.db")
    table = ReplicaTable()
    demand = Demand()
    clock = [0.0]
    controller = ModelController(
        store, table, PolicyScaler(demand, lambda m: 0.0), lambda: clock[0], lambda: "t"
    )
    return store, table, controller, demand


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


def _changed(store: SQLiteStore, table: ReplicaTable, controller: ModelController,
             replicas: int) -> Model:  # fmt: skip
    """A Model of ``replicas`` ready replicas, then its spec changed (another revision)."""
    old = model(replicas)
    store.apply(old)
    controller.reconcile(old.key)
    table.make_ready()
    new = model(replicas, args=("--speedup", "'2'"))
    assert revision_of(new) != revision_of(old)
    store.apply(new)
    return new


def test_changed_spec_rolls_one_at_a_time_without_losing_ready_replicas(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, _ = setup
    new = _changed(store, table, controller, 2)
    for _ in range(20):
        controller.reconcile(new.key)
        assert table.ready() >= 2, "a rollout step dropped below the ready count"
        assert len(table.rows) <= 3, "surged more than one replica"
        table.make_ready()
    revisions = {r.revision for r in table.rows.values()}
    assert revisions == {revision_of(new)} and len(table.rows) == 2


def test_a_larger_fleet_rolls_a_quarter_at_a_time(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, _ = setup
    new = _changed(store, table, controller, 8)
    rounds = 0  # cold starts the roll waits for
    while True:
        for _ in range(20):  # settle: retire what the ready new replicas replace, surge more
            controller.reconcile(new.key)
            assert table.ready() >= 8, "a rollout step dropped below the ready count"
            assert len(table.rows) <= 10, "surged more than a quarter of the fleet"
        if {r.revision for r in table.rows.values()} == {revision_of(new)}:
            break
        table.make_ready()
        rounds += 1
    assert rounds == 4 and len(table.rows) == 8  # two at a time: four cold starts, not eight


def test_a_fleet_rolling_onto_a_new_revision_still_grows_at_once(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, demand = setup
    new = _changed(store, table, controller, 2)
    controller.reconcile(new.key)  # the roll begins: one surge replica
    demand.queue_depth = 400  # a backlog that wants the whole fleet (4)
    for _ in range(5):
        controller.reconcile(new.key)
    starting = [r for r in table.rows.values() if r.revision == revision_of(new) and not r.ready]
    assert len(starting) == 2 and table.ready() == 2  # grown to 4 at once, old ones kept


def test_a_scaling_change_rolls_no_replica(setup) -> None:  # type: ignore[no-untyped-def]
    store, table, controller, _ = setup
    old = model(2)
    store.apply(old)
    controller.reconcile(old.key)
    table.make_ready()
    before = set(table.rows)
    bigger = model(3)
    assert revision_of(bigger) == revision_of(old)
    store.apply(bigger)
    controller.reconcile(bigger.key)
    assert before < set(table.rows) and len(table.rows) == 3


def test_scale_from_zero_on_demand_then_back_to_zero(tmp_path: Path) -> None:
    store, table, demand, clock = SQLiteStore(tmp_path / "s.db"), ReplicaTable(), Demand(), [0.0]
    controller = ModelController(
        store, table, PolicyScaler(demand, lambda m: 0.0), lambda: clock[0], lambda: "t"
    )
    m = model(0)
    store.apply(m)
    controller.reconcile(m.key)
    assert table.rows == {}
    demand.queue_depth = 3  # the activator holds requests
    clock[0] = 1.0
    controller.reconcile(m.key)
    assert len(table.rows) == 1
    table.make_ready()
    demand.queue_depth, demand.requests = 0, 3
    for t in (2.0, 10.0, 20.0):  # served, then idle but within scaleToZeroAfter (30 s)
        clock[0] = t
        controller.reconcile(m.key)
        assert len(table.rows) == 1
    clock[0] = 100.0  # idle past scaleToZeroAfter and past the 60 s stable window
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


def test_the_autoscaler_follows_the_cold_start_only_when_it_moves_by_2x() -> None:
    cold_start = [0.0]
    scaler = PolicyScaler(lambda m, ready: DemandSample(tokens_total=0.0), lambda m: cold_start[0])
    m = model(1)
    policy = scaler._scaler(m)
    cold_start[0] = 3.0  # first measurement: the horizon it looks ahead changes from none
    assert scaler._scaler(m) is policy and scaler._scalers[m.key].cold_start_s == 3.0
    for wobble in (3.4, 4.0, 2.6, 5.9):  # each start re-measures it, within 2x
        cold_start[0] = wobble
        scaler._scaler(m)
        assert scaler._scalers[m.key].cold_start_s == 3.0
    cold_start[0] = 6.5
    assert scaler._scaler(m) is policy and scaler._scalers[m.key].cold_start_s == 6.5


def _scaled(target: float, autoscaler: str = "tokens") -> Model:
    [m] = load_text(
        SPEC.replace("MIN", "1").replace("maxReplicas: 4", "maxReplicas: 20")
        .replace("scaleToZeroAfter", f"autoscaler: {autoscaler}, targetTokensPerSecond: {target}, scaleToZeroAfter")
    )  # fmt: skip
    assert isinstance(m, Model)
    return m


def test_an_edited_scaling_spec_keeps_the_autoscalers_history() -> None:
    """A loaded fleet whose target is edited keeps its count (a policy built anew knows no
    demand and asked for one replica), and follows the new target."""
    admitted = [0.0]
    scaler = PolicyScaler(
        lambda m, ready: DemandSample(
            tokens_total=admitted[0], admitted_tokens_total=admitted[0], in_flight=10,
            ready_replicas=ready,
        ),
        lambda m: 60.0,
    )  # fmt: skip
    now_s, replicas = 0.0, 1
    for _ in range(300):  # 8,000 tokens/s at 1,000 per replica
        now_s += 1.0
        admitted[0] += 8000.0
        replicas = scaler.desired_replicas(_scaled(1000), replicas, now_s)
    assert replicas == 8
    now_s += 1.0
    admitted[0] += 8000.0
    assert scaler.desired_replicas(_scaled(2000), replicas, now_s) == 8  # held: scale-down delay
    for _ in range(120):
        now_s += 1.0
        admitted[0] += 8000.0
        replicas = scaler.desired_replicas(_scaled(2000), replicas, now_s)
    assert replicas == 4
    policy = scaler._scaler(_scaled(2000))
    assert scaler._scaler(_scaled(2000, "concurrency")) is not policy  # another policy: built anew


def test_over_budget_holds_the_replicas_running_and_says_why(tmp_path: Path) -> None:
    store, table, demand = SQLiteStore(tmp_path / "s.db"), ReplicaTable(), Demand()
    refusal: list[str | None] = [None]
    controller = ModelController(
        store, table, PolicyScaler(demand, lambda m: 0.0), lambda: 0.0, lambda: "t",
        over_budget=lambda m: refusal[0],
    )  # fmt: skip
    m = model(1)
    store.apply(m)
    controller.reconcile(m.key)
    table.make_ready()
    refusal[0] = "namespace 'default' is over its daily budget"
    store.apply(model(3))  # the user asks for more: the budget refuses, the one running stays
    controller.reconcile(m.key)
    assert len(table.rows) == 1 and table.ready() == 1
    stored = store.get(m.key)
    assert isinstance(stored, Model)
    over = next(c for c in stored.status.conditions if c.type == "OverBudget")
    assert (over.status, over.reason) == ("True", "ScaleUpRefused")
    assert "from 1 to 3 replicas refused" in over.message and "daily budget" in over.message
    refusal[0] = None  # a new day, or a raised Budget
    controller.reconcile(m.key)
    assert len(table.rows) == 3
    stored = store.get(m.key)
    assert isinstance(stored, Model)
    over = next(c for c in stored.status.conditions if c.type == "OverBudget")
    assert (over.status, over.reason) == ("False", "WithinBudget")
