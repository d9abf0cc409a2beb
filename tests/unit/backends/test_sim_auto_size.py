"""``kapell@auto``: the replica size is chosen from the warm-up's demand, and only from it."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.backends.sim.sizing import size_option
from kapell.backends.sim.slices import ReplicaSize, slo_feasible, smallest_fitting
from kapell.bench import serving
from kapell.bench.traces import Trace, TraceRequest
from kapell.engines.sim.latency import load_profile
from kapell.policy.sizing import SizeOption, fleet_share

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


def test_a_bare_kapell_sizes_itself_and_bare_peers_use_whole_gpus() -> None:
    trace = _trace(warmup_per_s=0.5, after_per_s=0.5)
    assert serving.resolve_size(trace, OPTIONS, "kapell").name == _auto(trace) != "gpu"
    for label in ("kpa", "static", "kapell@gpu"):
        assert serving.resolve_size(trace, OPTIONS, label).name == "gpu"


def test_a_slice_that_only_just_prefills_the_long_prompts_in_time_is_refused() -> None:
    # Prompts whose idle prefill on the smallest feasible slice takes 60-90% of the TTFT target:
    # fine idle, a miss behind one more prompt, so auto must pick a larger size.
    slice_ = smallest_fitting(PROFILE, 1000, OPTIONS.slo_ttft_s, OPTIONS.slo_tpot_s)
    prompt = 1000
    while slice_.profile.prefill_s(prompt) < 0.6 * OPTIONS.slo_ttft_s:
        prompt += 500
    assert slice_.profile.prefill_s(prompt) < 0.9 * OPTIONS.slo_ttft_s
    trace = Trace("long-prompts", tuple(TraceRequest(i * 20.0, prompt, 50) for i in range(30)))
    chosen = serving.resolve_size(trace, OPTIONS, "kapell@auto")
    assert chosen.profile.prefill_s(prompt) <= 0.5 * OPTIONS.slo_ttft_s
    assert chosen.name != slice_.name


def test_without_a_warmup_auto_runs_whole_gpus() -> None:
    options = serving.ServeOptions(profile="h100-llama3-8b", warmup_s=0.0)
    trace = _trace(warmup_per_s=0.5, after_per_s=0.5)
    assert serving.resolve_size(trace, options, "kapell").name == "gpu"


def test_heavy_demand_picks_a_whole_gpu() -> None:
    # 40 requests/s x 1,200 tokens = 48k tokens/s: two GPUs, or five 3g.40gb slices (15/7).
    assert _auto(_trace(warmup_per_s=40.0, after_per_s=40.0)) == "gpu"


@settings(max_examples=6, deadline=None)
@given(
    warmup_per_s=st.sampled_from([0.5, 6.0]),
    after_per_s=st.floats(min_value=0.1, max_value=80.0),
)
def test_only_warmup_arrivals_decide(warmup_per_s: float, after_per_s: float) -> None:
    reference = _auto(_trace(warmup_per_s, warmup_per_s))
    assert _auto(_trace(warmup_per_s, after_per_s)) == reference


def _share(trace: Trace, warmup: list[TraceRequest], size: ReplicaSize, below: float) -> float:
    """The share ``policy.sizing.fleet_share`` gives ``size``, measured in the twin."""

    def serves(_: SizeOption, replicas: int) -> bool:
        return serving.warmup_serves(trace, OPTIONS, warmup, size, replicas)

    mean = sum(r.prompt_tokens + r.output_tokens for r in warmup) / WARMUP_S
    option = size_option(size)
    return fleet_share(option, mean, serves, below_share=below, max_replicas=64)


def test_the_choice_is_the_least_share_that_serves_the_warmup() -> None:
    # 6 requests/s x 1,200 tokens: one slice is not enough, two are, and two 3g slices cost
    # less than a GPU; the chosen fleet must serve the warm-up and one replica fewer must not.
    trace = _trace(warmup_per_s=6.0, after_per_s=6.0)
    warmup = [r for r in trace.requests if r.arrival_s < WARMUP_S]
    chosen = serving.resolve_size(trace, OPTIONS, "kapell@auto")
    share = _share(trace, warmup, chosen, math.inf)
    replicas = round(share / chosen.gpu_fraction)
    assert share < 1.0 and chosen.name != "gpu"
    if replicas > 1:
        fewer = _share(trace, warmup, chosen, (replicas - 1) * chosen.gpu_fraction + 1e-9)
        assert fewer == math.inf
    for other in slo_feasible(PROFILE, 1000, 0.5, 0.1):
        assert _share(trace, warmup, other, math.inf) >= share
