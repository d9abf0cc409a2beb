"""Autoscaling policies driven by synthetic time: windows, panic, zero, warm pool."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kapell.api import Model
from kapell.policy.autoscale import (
    AutoscaleConfig,
    ConcurrencyAutoscaler,
    DemandSample,
    StaticAutoscaler,
    TokenAutoscaler,
    autoscaler_for,
    forecast_rate,
    learn_capacity,
    replicas_for_rate,
)


def drive(scaler: TokenAutoscaler, rates: list[tuple[float, float]], ready: int,
          start_s: float = 0.0, tokens: float = 0.0) -> tuple[float, float]:  # fmt: skip
    """Feed one sample a second at each (duration_s, tokens_per_s); returns (now, tokens)."""
    now = start_s
    for duration_s, rate in rates:
        for _ in range(int(duration_s)):
            now += 1
            tokens += rate
            scaler.observe(now, DemandSample(tokens_total=tokens, in_flight=int(rate > 0),
                                             ready_replicas=ready))  # fmt: skip
    return now, tokens


def test_worked_examples() -> None:
    assert replicas_for_rate(4500, 1000) == 5
    assert replicas_for_rate(4000, 1000) == 4
    assert round(forecast_rate(1000, 2000, stable_window_s=60, panic_window_s=6,
                               horizon_s=20)) == 2852  # fmt: skip
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
    config = AutoscaleConfig(max_replicas=4, capacity_tokens_per_s=1000, scale_to_zero_after_s=300)
    scaler = TokenAutoscaler(config)
    now, tokens = drive(scaler, [(60, 1500)], ready=2)
    now, tokens = drive(scaler, [(200, 0)], ready=2, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 1
    now, _ = drive(scaler, [(120, 0)], ready=1, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 0


def test_queued_requests_scale_from_zero_at_once() -> None:
    scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=4, capacity_tokens_per_s=1000))
    scaler.observe(0.0, DemandSample(tokens_total=0, queue_depth=3, ready_replicas=0))
    assert scaler.desired(0.0).replicas >= 1


def test_warm_pool_adds_replicas_above_demand_until_zero() -> None:
    config = AutoscaleConfig(min_replicas=1, max_replicas=10, warm_pool=2,
                             capacity_tokens_per_s=1000)  # fmt: skip
    scaler = TokenAutoscaler(config)
    now, tokens = drive(scaler, [(120, 3000)], ready=5)
    assert scaler.desired(now).replicas == 5
    now, _ = drive(scaler, [(1000, 0)], ready=5, start_s=now, tokens=tokens)
    assert scaler.desired(now).replicas == 3, "idle but not at zero: min 1 + warm pool 2"


def test_cold_start_aware_scales_ahead_of_a_ramp() -> None:
    def final(cold_start_s: float) -> int:
        scaler = TokenAutoscaler(AutoscaleConfig(max_replicas=50, capacity_tokens_per_s=1000,
                                                 cold_start_s=cold_start_s))  # fmt: skip
        now, tokens = 0.0, 0.0
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


def test_concurrency_baseline_and_static() -> None:
    scaler = ConcurrencyAutoscaler(AutoscaleConfig(max_replicas=10, target_concurrency=4))
    for now in range(1, 120):
        scaler.observe(now, DemandSample(tokens_total=0, in_flight=10, ready_replicas=3))
    assert scaler.desired(119).replicas == 3
    assert StaticAutoscaler(4).desired(0).replicas == 4


def test_autoscaler_for_reads_the_model() -> None:
    model = Model.model_validate({
        "metadata": {"name": "m"},
        "spec": {"source": {"uri": "hf://org/m"},
                 "scaling": {"minReplicas": 0, "maxReplicas": 3, "autoscaler": "concurrency"}},
    })  # fmt: skip
    assert isinstance(autoscaler_for(model), ConcurrencyAutoscaler)
