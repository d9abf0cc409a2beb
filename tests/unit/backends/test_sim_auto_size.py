"""``kapell@auto`` in the twin: a ``gpu: auto`` Model sized by the live sizing policy.

The twin runs the ``PolicySizer`` that ``kapell up`` and the operator run, measuring in the
latency model, so a replay's replicas take the size the policy picks from the demand it meters
and roll onto another when a new pick has held.
"""

from __future__ import annotations

import pytest

from kapell.backends.sim.slices import replica_size, smallest_fitting
from kapell.bench import serving
from kapell.bench.traces import Trace, TraceRequest
from kapell.control.sizing import EVALUATE_EVERY_S, PEAK_SPAN_S
from kapell.engines.sim.latency import load_profile
from kapell.policy.sizing import grow_hold_s

WARMUP_S = 300.0
OPTIONS = serving.ServeOptions(profile="h100-llama3-8b", warmup_s=WARMUP_S)
PROFILE = load_profile("h100-llama3-8b")


def _arrivals(start_s: float, end_s: float, per_s: float, prompt: int = 1000) -> list[TraceRequest]:
    """Requests of ``prompt`` prompt and 200 output tokens, ``per_s`` a second, in [start, end)."""
    count = round((end_s - start_s) * per_s)
    return [TraceRequest(start_s + i / per_s, prompt, 200) for i in range(count)]


def _sizes(trace: Trace, label: str = "kapell", knob: float | None = 20_000.0) -> list[list]:
    run, measured_from_s = serving.replay(trace, OPTIONS, label, knob)
    return serving.summarize(run, OPTIONS, measured_from_s)["sizes"]


def test_bare_kapell_is_sized_automatically_and_bare_peers_run_whole_gpus() -> None:
    assert serving.label_size(OPTIONS, "kapell") == "auto"
    for label in ("kpa", "static", "kapell@gpu"):
        assert serving.label_size(OPTIONS, label) == "gpu"
    assert serving.label_size(OPTIONS, "static@3g.40gb") == "3g.40gb"


def test_light_demand_runs_on_the_smallest_slo_feasible_slice() -> None:
    smallest = smallest_fitting(PROFILE, 1000, OPTIONS.slo_ttft_s / 2, OPTIONS.slo_tpot_s)
    assert smallest.gpu_fraction < 1.0
    trace = Trace("light", tuple(_arrivals(0.0, 900.0, 0.5)))
    run, measured_from_s = serving.replay(trace, OPTIONS, "kapell", 20_000.0)
    summary = serving.summarize(run, OPTIONS, measured_from_s)
    assert summary["sizes"] == [[pytest.approx(summary["sizes"][0][0]), smallest.name]]
    assert summary["slo_attainment"] >= 0.99
    # Billed at the slice's share: one replica held all along costs its fraction of the hour.
    hours = summary["duration_s"] / 3600
    assert summary["gpu_hours"] == pytest.approx(smallest.gpu_fraction * hours, rel=0.05)


def test_a_fixed_size_reports_no_resizes() -> None:
    trace = Trace("light", tuple(_arrivals(0.0, 400.0, 0.5)))
    assert _sizes(trace, "kapell@gpu") == []


def test_demand_that_outgrows_the_slice_resizes_to_whole_gpus_after_the_hold() -> None:
    # 0.5 requests/s of 1,200 tokens for ten minutes, then 20/s (24k tokens/s: more than any
    # fleet of slices below one GPU's share carries): the pick moves to whole GPUs once half a
    # minute of it is metered, at the next evaluation, and applies once it has held.
    change_s = 600.0
    requests = _arrivals(0.0, change_s, 0.5) + _arrivals(change_s, change_s + 720.0, 20.0)
    sizes = _sizes(Trace("step", tuple(requests)))
    assert [size for _, size in sizes][-1] == "gpu" and sizes[0][1] != "gpu", sizes
    resized_s = next(t_s for t_s, size in sizes if size == "gpu") - WARMUP_S  # trace time
    hold_s = grow_hold_s(PROFILE.cold_start_s)
    latest_s = change_s + PEAK_SPAN_S + EVALUATE_EVERY_S + hold_s + EVALUATE_EVERY_S
    assert change_s + hold_s <= resized_s <= latest_s


def test_long_prompts_rule_out_a_slice_that_prefills_them_only_just_in_time() -> None:
    # Prompts whose idle prefill on the smallest slice takes 60-90% of the TTFT target: fine
    # idle, a miss behind one more prompt, so the policy must pick a larger size.
    smallest = smallest_fitting(PROFILE, 1000, OPTIONS.slo_ttft_s, OPTIONS.slo_tpot_s)
    prompt = 1000
    while smallest.profile.prefill_s(prompt) < 0.6 * OPTIONS.slo_ttft_s:
        prompt += 500
    assert smallest.profile.prefill_s(prompt) < 0.9 * OPTIONS.slo_ttft_s
    trace = Trace("long-prompts", tuple(_arrivals(0.0, 600.0, 0.05, prompt=prompt)))
    picked = {size for _, size in _sizes(trace)}
    assert picked and smallest.name not in picked
    for size in picked:
        assert replica_size(PROFILE, size).profile.prefill_s(prompt) <= OPTIONS.slo_ttft_s / 2
