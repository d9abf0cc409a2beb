"""Autoscaling policies driven by synthetic time: windows, panic, zero, warm pool."""

from __future__ import annotations

from dataclasses import replace as dc_replace
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from kapell.api import Model
from kapell.policy.autoscale import (
    AutoscaleConfig,
    ConcurrencyAutoscaler,
    DemandSample,
    StaticAutoscaler,
    TokenAutoscaler,
    build_autoscaler,
    forecast_rate,
    learn_capacity,
    replicas_for_rate,
    tuned_config,
)


def drive(scaler: TokenAutoscaler, rates: list[tuple[float, float]], ready: int,
          start_s: float = 0.0, tokens: float = 0.0) -> tuple[float, float]:  # fmt: skip
    """One sample and one decision a second at each (duration_s, tokens_per_s), as the control
    loop does; returns (now, tokens)."""
    now = start_s
    for duration_s, rate in rates:
        for _ in range(int(duration_s)):
            now += 1
            tokens += rate
            scaler.observe(now, DemandSample(tokens_total=tokens, in_flight=int(rate > 0),
                                             ready_replicas=ready))  # fmt: skip
            scaler.desired(now)
    return now, tokens


def test_worked_examples() -> None:
    assert replicas_for_rate(4500, 1000) == 5
    assert replicas_for_rate(4000, 1000) == 4
    assert round(forecast_rate(1000, 1200, window_s=60, horizon_s=60, max_growth=0.5)) == 1500
    assert forecast_rate(1000, 2000, window_s=60, horizon_s=60, max_growth=0.25) == 2500, "cap"
    assert forecast_rate(2000, 1000, window_s=60, horizon_s=60, max_growth=0.5) == 1000, "falls"
    assert forecast_rate(1000, 1200, window_s=60, horizon_s=0, max_growth=0.5) == 1200
    assert learn_capacity(1000, 800, saturated=True) == 960
    assert learn_capacity(1000, 1500, saturated=False) == 1500
    assert learn_capacity(1000, 500, saturated=False) == 1000


@given(st.floats(0, 1e6), st.floats(1, 1e5))
def test_replicas_cover_demand(demand: float, capacity: float) -> None:
    replicas = replicas_for_rate(demand, capacity)
    assert replicas * capacity >= demand - capacity * 1e-9
    assert replicas == 0 or (replicas - 1) * capacity < demand


def test_steady_demand_gives_steady_replicas() -> None:
    scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=20, capacity_tokens_per_s=1000))
    now, _ = drive(scaler, [(120, 4500)], ready=5)
    decision = scaler.desired(now)
    assert decision.replicas == 5 and not decision.panicking


def test_burst_panics_and_does_not_scale_down_while_panicking() -> None:
    scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=50, capacity_tokens_per_s=1000))
    now, tokens = drive(scaler, [(120, 2000)], ready=2)
    now, tokens = drive(scaler, [(6, 10_000)], ready=2, start_s=now, tokens=tokens)
    burst = scaler.desired(now)
    assert burst.panicking and burst.replicas >= 10
    now, tokens = drive(scaler, [(10, 0)], ready=10, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas >= burst.replicas, "no scale-down in panic"
    now, _ = drive(scaler, [(120, 2000)], ready=10, start_s=now, tokens=tokens)
    calm = scaler.desired(now)
    assert not calm.panicking and calm.replicas == 2


def test_scale_to_zero_only_after_idle_period() -> None:
    config = AutoscaleConfig(max_replicas=4, capacity_tokens_per_s=1000, scale_to_zero_after_s=300,
                             burst_memory_s=0)  # fmt: skip
    scaler = TokenAutoscaler(config)
    now, tokens = drive(scaler, [(60, 1500)], ready=2)
    now, tokens = drive(scaler, [(200, 0)], ready=2, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 1
    now, _ = drive(scaler, [(120, 0)], ready=1, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 0


def test_burst_memory_bridges_gaps_shorter_than_it_and_then_lets_go() -> None:
    config = AutoscaleConfig(max_replicas=10, capacity_tokens_per_s=1000, cold_start_s=60,
                             scale_to_zero_after_s=1000)  # fmt: skip
    scaler = TokenAutoscaler(config)  # default memory: 5 cold starts = 300 s
    now, tokens = 0.0, 0.0
    for _ in range(4):  # 30 s bursts of 4,000 tokens/s every 150 s
        now, tokens = drive(scaler, [(30, 4000), (120, 0)], ready=4, start_s=now, tokens=tokens)
        assert scaler.desired(now).replicas == 4, "the next burst finds its replicas"
    without = TokenAutoscaler(dc_replace(config, burst_memory_s=0))
    drive(without, [(30, 4000), (120, 0)] * 4, ready=4)
    assert without.desired(now).replicas == 1, "without memory the gap releases them"
    now, _ = drive(scaler, [(400, 0)], ready=4, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 1, "a memory with no burst left lets go"


def test_queued_requests_scale_from_zero_at_once() -> None:
    scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=4, capacity_tokens_per_s=1000))
    scaler.observe(0.0, DemandSample(tokens_total=0, queue_depth=3, ready_replicas=0))
    assert scaler.desired(0.0).replicas >= 1


def test_a_backlog_behind_a_cold_start_is_drained_over_the_cold_start() -> None:
    config = AutoscaleConfig(max_replicas=64, capacity_tokens_per_s=1000, cold_start_s=60,
                             default_tokens_per_request=600)  # fmt: skip
    scaler = TokenAutoscaler(config)
    # 300 requests x 600 tokens queued while nothing is ready: 180,000 tokens over 60 s needs
    # 3 replicas; over the 6 s panic window it would have asked for 30.
    scaler.observe(0.0, DemandSample(tokens_total=0, queue_depth=300, ready_replicas=0))
    assert scaler.desired(0.0).replicas == 3
    ready = TokenAutoscaler(config)
    ready.observe(0.0, DemandSample(tokens_total=0, queue_depth=300, ready_replicas=1))
    assert ready.desired(0.0).replicas == 30, "with a replica ready, the panic window drains it"


def test_warm_pool_adds_replicas_above_demand_until_zero() -> None:
    config = AutoscaleConfig(min_replicas=1, max_replicas=10, warm_pool=2,
                             capacity_tokens_per_s=1000)  # fmt: skip
    scaler = TokenAutoscaler(config)
    now, tokens = drive(scaler, [(120, 3000)], ready=5)
    assert scaler.desired(now).replicas == 5
    now, _ = drive(scaler, [(1000, 0)], ready=5, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 3, "idle but not at zero: min 1 + warm pool 2"


def test_cold_start_aware_scales_ahead_of_a_sustained_ramp() -> None:
    def final(cold_start_s: float) -> int:
        scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=50, capacity_tokens_per_s=1000,
                                                 cold_start_s=cold_start_s,
                                                 burst_memory_s=0))  # fmt: skip
        now, tokens = drive(scaler, [(90, 1000)], ready=3)  # the trend needs two full windows
        for second in range(60):
            now, tokens = drive(scaler, [(1, 1000 + 50 * second)], ready=3, start_s=now,
                                tokens=tokens)  # fmt: skip
        return scaler.desired(now).replicas

    assert final(60.0) > final(0.0)


def test_learned_capacity_follows_saturated_throughput() -> None:
    scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=10, initial_capacity_tokens_per_s=5000))
    tokens = 0.0
    for now in range(1, 200):
        tokens += 1600
        scaler.observe(now, DemandSample(tokens_total=tokens, ready_replicas=2, engine_waiting=4))
    assert abs(scaler.capacity_tokens_per_s - 800) < 50


def test_a_request_waiting_now_and_then_is_not_saturation() -> None:
    """Four replicas doing 1,000 tokens/s each, with one request waiting in every third sample
    (the next step boundary): the learned capacity must not fall toward that throughput."""
    scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=10, initial_capacity_tokens_per_s=5000))
    tokens = 0.0
    for now in range(1, 200):
        tokens += 4000
        scaler.observe(now, DemandSample(tokens_total=tokens, ready_replicas=4,
                                         engine_waiting=int(now % 3 == 0)))  # fmt: skip
    assert scaler.capacity_tokens_per_s == 5000
    assert scaler.desired(200).replicas == 1


def test_concurrency_baseline_and_static() -> None:
    scaler = ConcurrencyAutoscaler(AutoscaleConfig(max_replicas=10, target_concurrency=4))
    for now in range(1, 120):
        scaler.observe(now, DemandSample(tokens_total=0, in_flight=10, ready_replicas=3))
    assert scaler.desired(119).replicas == 3
    assert StaticAutoscaler(4).desired(0).replicas == 4


def test_the_factory_builds_the_policy_the_model_names() -> None:
    model = Model.model_validate({
        "metadata": {"name": "m"},
        "spec": {"source": {"uri": "hf://org/m"},
                 "scaling": {"minReplicas": 0, "maxReplicas": 3, "autoscaler": "concurrency"}},
    })  # fmt: skip
    built = build_autoscaler(model.spec.scaling.autoscaler, tuned_config(model))
    assert isinstance(built, ConcurrencyAutoscaler)


def test_a_short_spike_is_not_extrapolated() -> None:
    """Six seconds at 3x the mean move the 60 s mean by 20%; the forecast must not add more."""
    config = AutoscaleConfig(max_replicas=50, capacity_tokens_per_s=1000, cold_start_s=60,
                             panic_threshold=100)  # fmt: skip
    scaler = TokenAutoscaler(config)
    now, _ = drive(scaler, [(180, 2000), (6, 6000)], ready=2)
    assert scaler.desired(now).replicas == 3, "2,400 tokens/s x at most 1.25, no 3.3x trend"


def test_scale_down_waits_a_cold_start_of_lower_recommendations() -> None:
    def replicas_after_drop(delay_s: float | None, seconds: int) -> int:
        config = AutoscaleConfig(max_replicas=20, capacity_tokens_per_s=1000, cold_start_s=90,
                                 scale_down_delay_s=delay_s, burst_memory_s=0)  # fmt: skip
        scaler = TokenAutoscaler(config)
        now, tokens = drive(scaler, [(240, 4500)], ready=5)
        now, _ = drive(scaler, [(seconds, 1500)], ready=5, start_s=now, tokens=tokens)
        return scaler.desired(now).replicas

    # 100 s after the drop the delay (one cold start, 90 s) still holds what was recommended 10 s
    # after it: the 60 s mean was (50 x 4,500 + 10 x 1,500) / 60 = 4,000 tokens/s, 4 replicas.
    assert replicas_after_drop(None, 100) == 4
    assert replicas_after_drop(0.0, 100) == 2, "no delay: the 60 s window has moved on"
    assert replicas_after_drop(None, 200) == 2, "lower counts held 90 s after the window moved"


@given(st.lists(st.integers(0, 8000), min_size=5, max_size=40))
def test_a_replica_asked_for_is_kept_for_the_scale_down_delay(rates: list[int]) -> None:
    config = AutoscaleConfig(min_replicas=1, max_replicas=20, capacity_tokens_per_s=1000,
                             cold_start_s=30, stable_window_s=20, panic_window_s=4)  # fmt: skip
    scaler = TokenAutoscaler(config)
    now, tokens, decisions = 0.0, 0.0, []
    for rate in rates:  # 10 s per step, one sample and one decision a second
        for _ in range(10):
            now, tokens = drive(scaler, [(1, rate)], ready=5, start_s=now, tokens=tokens)
            decisions.append(scaler.desired(now).replicas)  # the same as drive's
    for t, (before, after) in enumerate(pairwise(decisions), start=1):
        if after > before:
            assert min(decisions[t : t + 30]) >= after


def test_admitted_tokens_count_demand_before_completion() -> None:
    """Long requests in flight: nothing has completed yet, the admitted rate already shows."""
    config = AutoscaleConfig(max_replicas=20, capacity_tokens_per_s=1000)
    scaler = TokenAutoscaler(config)
    for now in range(1, 61):
        scaler.observe(now, DemandSample(tokens_total=0, in_flight=now, ready_replicas=1,
                                         admitted_tokens_total=4500.0 * now))  # fmt: skip
    assert scaler.desired(60).replicas == 5


def test_concurrency_baseline_scales_down_without_delay() -> None:
    """Knative's KPA default: scale-down-delay 0, only the 60 s window."""
    scaler = ConcurrencyAutoscaler(AutoscaleConfig(max_replicas=10, target_concurrency=4,
                                                   cold_start_s=600))  # fmt: skip
    for now in range(1, 121):
        scaler.observe(now, DemandSample(tokens_total=0, in_flight=20, ready_replicas=5))
    for now in range(121, 182):
        scaler.observe(now, DemandSample(tokens_total=0, in_flight=4, ready_replicas=5))
    assert scaler.desired(181).replicas == 1


def test_a_resize_scales_a_learned_capacity_and_a_set_target_replaces_it() -> None:
    config = AutoscaleConfig(max_replicas=50, initial_capacity_tokens_per_s=7000)
    scaler = TokenAutoscaler(dc_replace(config, replica_gpu_share=1.0))
    scaler.reconfigure(dc_replace(config, replica_gpu_share=3 / 7))  # onto 3g.40gb slices
    assert round(scaler.capacity_tokens_per_s) == 3000
    scaler.reconfigure(dc_replace(config, capacity_tokens_per_s=5000, replica_gpu_share=3 / 7))
    assert scaler.capacity_tokens_per_s == 5000
    scaler.reconfigure(dc_replace(config, replica_gpu_share=3 / 7))  # the target unset: learn
    assert scaler.capacity_tokens_per_s == 7000


def test_a_resize_converts_the_counts_held_through_the_scale_down_delay() -> None:
    # Ten 3g.40gb slices (30/7 GPUs) busy, then the fleet is resized to whole GPUs at the same
    # tokens per GPU: the count held through the delay becomes 5 GPUs (ceil 4.29), not 10.
    share = 3 / 7
    sliced = AutoscaleConfig(max_replicas=50, capacity_tokens_per_s=3000, replica_gpu_share=share,
                             cold_start_s=60.0)  # fmt: skip
    scaler = TokenAutoscaler(sliced)
    for now in range(1, 61):
        scaler.observe(now, DemandSample(tokens_total=0, ready_replicas=10,
                                         admitted_tokens_total=30_000.0 * now))  # fmt: skip
    assert scaler.desired(60).replicas == 10
    scaler.reconfigure(dc_replace(sliced, capacity_tokens_per_s=7000, replica_gpu_share=1.0))
    for now in range(61, 71):  # demand gone: only the scale-down delay holds the count
        scaler.observe(now, DemandSample(tokens_total=0, ready_replicas=10,
                                         admitted_tokens_total=30_000.0 * 60))  # fmt: skip
    assert scaler.desired(70).replicas == 5
