"""``kapell@auto``: the replica size is chosen from the warm-up's demand, and only from it."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.backends.sim.slices import (
    capacity_tokens_per_s,
    cheapest_for_demand,
    slo_feasible,
    smallest_fitting,
)
from kapell.bench import serving
from kapell.bench.traces import Trace, TraceRequest
from kapell.engines.sim.latency import load_profile

WARMUP_S = 300.0
OPTIONS = serving.ServeOptions(profile="h100-llama3-8b", warmup_s=WARMUP_S)
PROFILE = load_profile("h100-llama3-8b")


def _arrivals(start_s: float, end_s: float, per_s: float) -> list[TraceRequest]:
    """Requests of 1,000 prompt and 200 output tokens, ``per_s`` a second, in [start, end)."""
    count = round((end_s - start_s) * per_s)
    return [TraceRequest(start_s + i / per_s, 1000, 200) for i in range(count)]


def _trace(warmup_per_s: float, after_per_s: float) -> Trace:
    requests = _arrivals(0.0, WARMUP_S, warmup_per_s)
    requests += _arrivals(WARMUP_S, 3 * WARMUP_S, after_per_s)
    return Trace("synthetic", tuple(requests))


def _auto(trace: Trace) -> str:
    return serving.resolve_size(trace, OPTIONS, "kapell@auto").name


def test_light_demand_picks_the_smallest_slo_feasible_slice() -> None:
    smallest = smallest_fitting(PROFILE, 1000, OPTIONS.slo_ttft_s, OPTIONS.slo_tpot_s)
    assert smallest.gpu_fraction < 1.0
    assert _auto(_trace(warmup_per_s=0.5, after_per_s=0.5)) == smallest.name


def test_heavy_demand_picks_a_whole_gpu() -> None:
    # 40 requests/s x 1,200 tokens = 48k tokens/s: two GPUs, or five 3g.40gb slices (15/7).
    assert _auto(_trace(warmup_per_s=40.0, after_per_s=40.0)) == "gpu"


@settings(max_examples=15, deadline=None)
@given(
    warmup_per_s=st.sampled_from([0.5, 40.0]),
    after_per_s=st.floats(min_value=0.1, max_value=80.0),
)
def test_only_warmup_arrivals_decide(warmup_per_s: float, after_per_s: float) -> None:
    reference = _auto(_trace(warmup_per_s, warmup_per_s))
    assert _auto(_trace(warmup_per_s, after_per_s)) == reference


def test_warmup_demand_is_the_p90_window_rate() -> None:
    requests = _arrivals(0.0, 60.0, 1.0) + _arrivals(60.0, WARMUP_S, 10.0)
    demand = serving.warmup_demand_tokens_per_s(requests, WARMUP_S)
    assert math.isclose(demand, 10.0 * 1200, rel_tol=1e-9)
    assert serving.warmup_demand_tokens_per_s([], WARMUP_S) == 0.0


@settings(max_examples=25, deadline=None)
@given(demand=st.floats(min_value=0.0, max_value=200_000.0))
def test_the_choice_has_the_least_expected_gpu_share(demand: float) -> None:
    candidates = slo_feasible(PROFILE, 4000, 1.0, 0.1)

    def share(size_index: int) -> float:
        size = candidates[size_index]
        replicas = max(1, math.ceil(demand / capacity_tokens_per_s(size, 1000.0, 200.0)))
        return size.gpu_fraction * replicas

    chosen = cheapest_for_demand(candidates, demand, 1000.0, 200.0)
    best = share(candidates.index(chosen))
    assert all(best <= share(i) for i in range(len(candidates)))
