"""The discrete-event twin: determinism, accounting, cold and warm starts, prefix routing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.backends.sim.twin import EXPECTED_OUTPUT_TOKENS, Twin, TwinConfig
from kapell.engines.sim.latency import load_profile
from kapell.policy.autoscale import (
    AutoscaleConfig,
    DemandSample,
    StaticAutoscaler,
    TokenAutoscaler,
)

PROFILE = load_profile("h100-llama3-8b")


@dataclass(frozen=True)
class Req:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...] = ()


def _steady(n: int, gap_s: float, prompt: int = 800, output: int = 60) -> list[Req]:
    return [Req(i * gap_s, prompt + 37 * (i % 5), output + 11 * (i % 3)) for i in range(n)]


def _tokens(min_replicas: int, **kw: float) -> TokenAutoscaler:
    return TokenAutoscaler(
        AutoscaleConfig(
            min_replicas=min_replicas, max_replicas=8, capacity_tokens_per_s=4000.0, **kw
        )
    )


@given(st.integers(0, 2**16))
@settings(max_examples=5, deadline=None)
def test_same_seed_same_replay(seed: int) -> None:
    requests = _steady(200, 0.05)
    config = TwinConfig(profile=PROFILE, seed=seed, initial_replicas=1)
    a = Twin(config, requests, _tokens(1, cold_start_s=60.0)).replay()
    b = Twin(config, requests, _tokens(1, cold_start_s=60.0)).replay()
    assert a.requests == b.requests and a.timeline == b.timeline


def test_every_request_finishes_no_faster_than_an_idle_replica() -> None:
    requests = _steady(300, 0.02)
    run = Twin(
        TwinConfig(profile=PROFILE, initial_replicas=2), requests, StaticAutoscaler(2)
    ).replay()
    for record in run.requests:
        ttft_s = record.first_token_s - record.arrival_s
        assert ttft_s >= PROFILE.prefill_s(record.prompt_tokens) * 0.999
        assert record.finish_s >= record.first_token_s


def test_static_replicas_hold_gpus_for_the_whole_replay() -> None:
    requests = _steady(100, 0.5)
    run = Twin(
        TwinConfig(profile=PROFILE, initial_replicas=3), requests, StaticAutoscaler(3)
    ).replay()
    end_s = run.gpu_seconds_by_window[-1][0]
    assert run.gpu_seconds_by_window[-1][1] == pytest.approx(3 * end_s)
    assert run.cold_starts == 0


def test_scale_from_zero_waits_for_a_cold_start() -> None:
    requests = [Req(10.0, 500, 20), Req(10.5, 500, 20)]
    config = TwinConfig(profile=PROFILE, initial_replicas=0, cold_start_s=60.0)
    run = Twin(config, requests, _tokens(0, cold_start_s=60.0)).replay()
    assert run.cold_starts >= 1
    assert all(r.waited_for_replica for r in run.requests)
    assert all(r.first_token_s - r.arrival_s > 60.0 * 0.9 - 2.0 for r in run.requests)


def test_warm_tier_wakes_in_seconds_instead_of_a_cold_start() -> None:
    # A burst, silence long enough to scale to zero, then a second burst.
    requests = [Req(1.0 + i * 0.1, 400, 10) for i in range(5)]
    requests += [Req(400.0 + i * 0.1, 400, 10) for i in range(5)]
    scaler = _tokens(0, cold_start_s=60.0, scale_to_zero_after_s=30.0)
    config = TwinConfig(
        profile=PROFILE, initial_replicas=1, warm_tier=1, cold_start_s=60.0, wake_s=5.0
    )
    run = Twin(config, requests, scaler).replay()
    assert run.wakes >= 1 and run.sleeping_gpu_seconds > 0
    second = run.requests[5:]
    assert all(r.waited_for_replica for r in second)
    assert max(r.first_token_s - r.arrival_s for r in second) < 5.0 + 2.0 + 1.0


def _shared_prefix_trace() -> list[Req]:
    # 30 conversations re-sending a growing history of 512-token blocks. Together they outgrow
    # one replica's prefix cache; a quarter of them fit, which affinity routing can exploit.
    requests = []
    for turn in range(6):
        for conv in range(30):
            blocks = tuple(conv * 1000 + b for b in range(30 + turn))
            requests.append(Req(turn * 20.0 + conv * 0.5, 512 * len(blocks), 20, blocks))
    return requests


def test_prefix_affinity_raises_cache_hits_over_round_robin() -> None:
    rates = {}
    for router in ("round-robin", "prefix-affinity"):
        config = TwinConfig(
            profile=PROFILE, router=router, initial_replicas=4, prefix_block_tokens=512
        )
        run = Twin(config, _shared_prefix_trace(), StaticAutoscaler(4)).replay()
        cached = sum(r.cached_tokens for r in run.requests)
        rates[router] = cached / sum(r.prompt_tokens for r in run.requests)
    assert rates["prefix-affinity"] > rates["round-robin"] + 0.1


def test_routing_goes_through_kapell_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from kapell.policy import routing

    calls: list[int] = []
    real = routing.least_tokens

    def spy(loads):  # type: ignore[no-untyped-def]
        calls.append(len(loads))
        return real(loads)

    monkeypatch.setattr(routing, "least_tokens", spy)
    requests = _steady(50, 0.05)
    Twin(TwinConfig(profile=PROFILE, initial_replicas=3), requests, StaticAutoscaler(3)).replay()
    assert calls == [3] * 50


def test_the_autoscaler_sees_tokens_at_admission_before_completion() -> None:
    samples: list[DemandSample] = []

    class Recorder(StaticAutoscaler):
        def observe(self, now_s: float, sample: DemandSample) -> None:
            samples.append(sample)

    requests = [Req(0.5 + i * 0.05, 1000, 400) for i in range(20)]  # 400 tokens: > 3 s each
    Twin(TwinConfig(profile=PROFILE, initial_replicas=1), requests, Recorder(1)).replay()
    early = samples[1]  # the tick at 2 s: all admitted, none finished
    assert early.tokens_total == 0 and early.in_flight == 20
    assert early.admitted_tokens_total == 20 * (1000 + EXPECTED_OUTPUT_TOKENS)
