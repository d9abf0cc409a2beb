"""The live sizer and the Model controller applying its pick: a ``gpu: auto`` Model's replicas
run at the size ``policy.sizing`` picks from metered demand, resized by a rolling update only
after a new pick has held, with the size and the reason in the status."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.unit.control.test_model_controller import SPEC, ReplicaTable

from kapell.api import Model
from kapell.api.loader import load_text
from kapell.backends.local.store import SQLiteStore
from kapell.backends.sim.sizing import LatencyModelSizes
from kapell.control.model import ModelController, revision_of
from kapell.control.scaling import PolicyScaler
from kapell.control.sizing import DEMAND_WINDOW_S, PolicySizer, sized
from kapell.policy.autoscale import DemandSample
from kapell.policy.sizing import SizeOption, SteadyDemand

AUTO = SPEC.replace("MIN", "2") + "  resources: {gpu: auto}\n"
SLICE = SizeOption("3g.40gb", 3 / 7, 10_000.0)
GPU = SizeOption("gpu", 1.0, 40_000.0)
SLICE_CARRIES = 2_000.0
"""Tokens/s one slice serves in this fake measurement; a GPU serves anything."""


class Measure:
    """A stand-in for the latency model's measurement (named as such): a slice carries
    ``SLICE_CARRIES`` tokens/s, prompts over 4,000 tokens rule the slice out."""

    def __init__(self) -> None:
        self.asked: list[SteadyDemand] = []

    def candidates(self, model: Model, prompt_tokens: int) -> Sequence[SizeOption]:
        return [GPU] if prompt_tokens > 4000 else [SLICE, GPU]

    def serves(self, model: Model, option: SizeOption, demand: SteadyDemand, replicas: int) -> bool:
        self.asked.append(demand)
        return option is GPU or demand.tokens_per_s <= replicas * SLICE_CARRIES


class Meter:
    """Cumulative counters as the gateway's meter reports them, driven at a set rate."""

    def __init__(self, counts_arrivals: bool = False) -> None:
        self.requests = self.prompt = self.tokens = self.admitted = 0.0
        self.counts_arrivals = counts_arrivals

    def run(self, seconds: float, per_s: float, prompt: int = 1000, output: int = 200,
            arriving_per_s: float | None = None) -> None:  # fmt: skip
        """``per_s`` requests complete a second; ``arriving_per_s`` arrive (default: as many)."""
        n = seconds * per_s
        self.requests += n
        self.prompt += n * prompt
        self.tokens += n * (prompt + output)
        self.admitted += seconds * (arriving_per_s or per_s) * (prompt + output)

    def __call__(self, model: Model) -> DemandSample:
        return DemandSample(
            tokens_total=self.tokens,
            requests_total=self.requests,
            prompt_tokens_total=self.prompt,
            admitted_tokens_total=self.admitted if self.counts_arrivals else None,
        )


def _sizer(counts_arrivals: bool = False) -> tuple[Meter, Measure, PolicySizer]:
    """A meter, the fake measurement and a sizer over them (cold start 60 s: holds of 60 s to
    grow, 300 s to shrink)."""
    meter, measure = Meter(counts_arrivals), Measure()
    return meter, measure, PolicySizer(meter, measure, cold_start_s=lambda m: 60.0)


def _auto() -> Model:
    [m] = load_text(AUTO)
    assert isinstance(m, Model)
    return m


def test_the_pick_follows_metered_demand_after_the_hold(tmp_path: Path) -> None:
    meter, measure, sizer = _sizer()
    m = _auto()
    first = sizer.size_for(m, 0.0)
    assert first.size == "3g.40gb" and "no demand" in first.reason and first.provisional
    now_s = 0.0
    for _ in range(20):  # 0.5 requests/s of 1,200 tokens: 600 tokens/s, one slice
        now_s += 10.0
        meter.run(10.0, 0.5)
        choice = sizer.size_for(m, now_s)
    assert choice.size == "3g.40gb" and "600 tokens/s" in choice.reason, choice
    assert measure.asked[-1] == SteadyDemand(0.5, 1000, 200)

    def run_until(size: str, per_s: float) -> float:
        """Seconds of ``per_s`` requests/s until the pick applied is ``size``."""
        started_s = now_s
        for _ in range(200):
            step(per_s)
            if choice.size == size:
                break
        assert choice.size == size and "held" in choice.reason, choice
        return now_s - started_s

    def step(per_s: float) -> None:
        nonlocal now_s, choice
        now_s += 10.0
        meter.run(10.0, per_s)
        choice = sizer.size_for(m, now_s)

    # 5 requests/s: 6,000 tokens/s, three slices > one GPU. Picked once a half-minute of it
    # is metered, at the next evaluation, and applied after holding a cold start.
    grew_s = run_until("gpu", 5.0)
    assert 60.0 <= grew_s <= 30.0 + 30.0 + 60.0 + 10.0, grew_s
    # Back to 0.5/s: the slice is picked once the burst has left the window, and applied
    # only after holding five minutes.
    shrank_s = run_until("3g.40gb", 0.5)
    assert DEMAND_WINDOW_S + 300.0 <= shrank_s <= DEMAND_WINDOW_S + 300.0 + 30.0 + 10.0, shrank_s


def test_demand_is_measured_over_a_minute_of_arrivals_not_a_backlog_s_completions() -> None:
    # A fleet too small for its load completes 1 request/s while 5 arrive: sized by completions
    # the demand would fit one slice; by arrivals it needs whole GPUs (6,000 tokens/s).
    meter, measure, sizer = _sizer(counts_arrivals=True)
    m = _auto()
    now_s = 0.0
    assert sizer.size_for(m, now_s).provisional  # nothing seen: the smallest size
    for _ in range(5):  # less than a minute: guesses from what was seen, re-made every 10 s
        now_s += 10.0
        meter.run(10.0, 1.0, arriving_per_s=5.0)
        choice = sizer.size_for(m, now_s)
        assert choice.size == "gpu" and choice.provisional, choice
        assert f"a guess from {now_s:.0f} s of demand" in choice.reason
    now_s += 10.0
    meter.run(10.0, 1.0, arriving_per_s=5.0)
    choice = sizer.size_for(m, now_s)
    assert measure.asked[-1] == SteadyDemand(5.0, 1000, 200)
    assert choice.size == "gpu" and not choice.provisional and "guess" not in choice.reason


def test_a_guess_gives_way_at_once_even_to_a_smaller_size() -> None:
    # The first seconds look heavy (a guess of whole GPUs); measured over a minute the demand
    # fits a slice, and the guess is replaced without the five-minute hold.
    meter, _, sizer = _sizer(counts_arrivals=True)
    m = _auto()
    sizer.size_for(m, 0.0)
    meter.run(10.0, 5.0)
    assert sizer.size_for(m, 10.0).size == "gpu"
    now_s = 10.0
    for _ in range(5):
        now_s += 10.0
        meter.run(10.0, 0.2)
        choice = sizer.size_for(m, now_s)
    assert now_s == 60.0 and choice.size == "3g.40gb" and not choice.provisional, choice


def test_bursty_demand_is_sized_for_its_busiest_half_minute_not_its_mean() -> None:
    # 40 s of 5 requests/s, then 80 s idle: a mean of 1.67/s, which one slice would carry, but
    # the fleet must carry 5/s while the burst lasts.
    meter, measure, sizer = _sizer(counts_arrivals=True)
    m = _auto()
    now_s = 0.0
    sizer.size_for(m, now_s)
    for second in range(120):
        meter.run(1.0, 5.0 if second < 40 else 0.0)
        now_s += 1.0
        sizer.size_for(m, now_s)
    informed = [d for d in measure.asked if d.requests_per_s > 0]
    assert informed and informed[-1].requests_per_s == pytest.approx(5.0)


def test_the_controller_runs_replicas_at_the_picked_size_and_says_why(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    table = ReplicaTable()
    meter, clock = Meter(), [0.0]
    sizer = PolicySizer(meter, Measure(), cold_start_s=lambda m: 60.0)
    scaler = PolicyScaler(lambda m, ready: meter(m), lambda m: 60.0)
    controller = ModelController(store, table, scaler, lambda: clock[0], lambda: "t", sizer=sizer)
    m = _auto()
    store.apply(m)
    controller.reconcile(m.key)
    on_slices = revision_of(sized(m, "3g.40gb"))
    assert {r.revision for r in table.rows.values()} == {on_slices} and len(table.rows) == 2
    table.make_ready()
    controller.reconcile(m.key)
    stored = store.get(m.key)
    assert isinstance(stored, Model)
    assert stored.status.replica_size == "3g.40gb"
    [why] = [c for c in stored.status.conditions if c.type == "Sized"]
    assert why.reason == "SizingPolicy" and "no demand" in why.message
    # Long prompts rule the slice out; the first pick made from demand replaces the guess made
    # before any (no hold), and the fleet rolls onto GPUs, one surge replica at a time, never
    # below its ready count.
    for _ in range(80):
        clock[0] += 10.0
        meter.run(10.0, 0.5, prompt=6000)
        controller.reconcile(m.key)
        assert table.ready() >= 2 or clock[0] < 20.0
        table.make_ready()
    assert {r.revision for r in table.rows.values()} == {revision_of(sized(m, "gpu"))}
    stored = store.get(m.key)
    assert isinstance(stored, Model) and stored.status.replica_size == "gpu"
    gpu = sized(m, "gpu").spec.resources.gpu
    assert gpu is not None and gpu.count == 1 and not gpu.auto


def test_without_a_sizer_an_auto_model_runs_on_whole_gpus(tmp_path: Path) -> None:
    store, table = SQLiteStore(tmp_path / "state.db"), ReplicaTable()
    scaler = PolicyScaler(lambda m, ready: DemandSample(tokens_total=0.0), lambda m: 0.0)
    controller = ModelController(store, table, scaler, lambda: 0.0, lambda: "t")
    m = _auto()
    store.apply(m)
    controller.reconcile(m.key)
    stored = store.get(m.key)
    assert isinstance(stored, Model) and stored.status.replica_size == "gpu"
    assert {r.revision for r in table.rows.values()} == {revision_of(sized(m, "gpu"))}


def test_an_auto_models_target_is_per_gpu_and_a_slice_aims_for_its_share() -> None:
    [m] = load_text(
        AUTO.replace("scaleToZeroAfter", "targetTokensPerSecond: 7000, scaleToZeroAfter")
    )
    assert isinstance(m, Model)
    assert sized(m, "gpu").spec.scaling.target_tokens_per_second == 7000
    assert sized(m, "3g.40gb").spec.scaling.target_tokens_per_second == 7000 * 428 / 1000
    assert sized(_auto(), "3g.40gb").spec.scaling.target_tokens_per_second is None


def test_a_model_the_latency_model_cannot_size_runs_on_whole_gpus_and_says_why(
    tmp_path: Path,
) -> None:
    store, table = SQLiteStore(tmp_path / "state.db"), ReplicaTable()
    sizer = PolicySizer(Meter(), LatencyModelSizes(), cold_start_s=lambda m: 60.0)
    scaler = PolicyScaler(lambda m, ready: DemandSample(tokens_total=0.0), lambda m: 0.0)
    controller = ModelController(store, table, scaler, lambda: 0.0, lambda: "t", sizer=sizer)
    [m] = load_text(AUTO.replace("h100-llama3-8b", "no-such-profile"))
    assert isinstance(m, Model)
    store.apply(m)
    controller.reconcile(m.key)
    stored = store.get(m.key)
    assert isinstance(stored, Model) and stored.status.replica_size == "gpu"
    [why] = [c for c in stored.status.conditions if c.type == "Sized"]
    assert "cannot size" in why.message and "no-such-profile" in why.message


def test_a_deleted_model_leaves_nothing_in_the_scaler_or_the_sizer(tmp_path: Path) -> None:
    """Each Model's autoscaler and sizing window are kept between reconciles; a Model that is
    gone must not keep them (an operator sees Models come and go for months)."""
    store, table = SQLiteStore(tmp_path / "state.db"), ReplicaTable()
    sizer = PolicySizer(Meter(), Measure(), cold_start_s=lambda m: 60.0)
    scaler = PolicyScaler(lambda m, ready: DemandSample(tokens_total=0.0), lambda m: 0.0)
    controller = ModelController(store, table, scaler, lambda: 0.0, lambda: "t", sizer=sizer)
    m = _auto()
    store.apply(m)
    controller.reconcile(m.key)
    assert m.key in scaler._scalers and m.key in sizer._models
    assert store.delete(m.key)
    controller.reconcile(m.key)
    assert m.key not in scaler._scalers and m.key not in sizer._models
