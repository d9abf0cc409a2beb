"""The serving twin: the production control plane on the virtual clock over sim replicas.

Determinism, accounting, cold and warm starts, routing and the demand the autoscaler sees.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.api import Model, ObjectMeta
from kapell.api.model import ModelSpec
from kapell.backends.sim.clock import VirtualClockLoop
from kapell.backends.sim.twin import SimSettings
from kapell.bench.twin_replay import Twin, TwinConfig, TwinRun
from kapell.engines.sim.latency import load_profile
from kapell.policy.autoscale import DemandSample, StaticAutoscaler

PROFILE = load_profile("h100-llama3-8b")


@dataclass(frozen=True)
class Req:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...] = ()


def _steady(n: int, gap_s: float, prompt: int = 800, output: int = 60) -> list[Req]:
    return [Req(i * gap_s, prompt + 37 * (i % 5), output + 11 * (i % 3)) for i in range(n)]


def _model(scaling: dict[str, Any], router: str = "least-tokens") -> Model:
    spec = {
        "source": {"uri": "h100-llama3-8b"},
        "engine": {"name": "sim"},
        "scaling": scaling,
        "routing": {"strategy": router},
    }
    return Model(metadata=ObjectMeta(name="m"), spec=ModelSpec.model_validate(spec))


def _tokens(min_replicas: int, **scaling: Any) -> Model:
    return _model(
        {"minReplicas": min_replicas, "maxReplicas": 8, "targetTokensPerSecond": 4000.0, **scaling}
    )


def _static(replicas: int, router: str = "least-tokens") -> Model:
    return _model(
        {"autoscaler": "static", "minReplicas": replicas, "maxReplicas": replicas}, router
    )


def _replay(requests: list[Req], model: Model, initial: int, **replicas: Any) -> TwinRun:
    config = TwinConfig(replicas=SimSettings(profile=PROFILE, **replicas), initial_replicas=initial)
    return Twin(config, requests, model).replay()


def test_the_virtual_clock_jumps_to_timers() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        loop.call_later(3600.0, event.set)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(event.wait(), 10.0)
        timed_out_at = loop.time()
        await event.wait()
        return timed_out_at, loop.time()

    loop = VirtualClockLoop()
    try:
        assert loop.run_until_complete(main()) == (10.0, 3600.0)
    finally:
        loop.close()


@given(st.integers(0, 2**16))
@settings(max_examples=3, deadline=None)
def test_same_seed_same_replay(seed: int) -> None:
    requests = _steady(200, 0.05)
    a = _replay(requests, _tokens(1), 1, seed=seed, cold_start_s=60.0)
    b = _replay(requests, _tokens(1), 1, seed=seed, cold_start_s=60.0)
    assert a.requests == b.requests and a.timeline == b.timeline


def test_every_request_finishes_no_faster_than_an_idle_replica() -> None:
    run = _replay(_steady(300, 0.02), _static(2), 2)
    for record in run.requests:
        assert record.status == 200
        ttft_s = record.first_token_s - record.arrival_s
        assert ttft_s >= PROFILE.prefill_s(record.prompt_tokens) * 0.999
        assert record.finish_s >= record.first_token_s


def test_static_replicas_hold_gpus_for_the_whole_replay() -> None:
    run = _replay(_steady(100, 0.5), _static(3), 3)
    end_s = run.gpu_seconds_by_window[-1][0]
    assert run.gpu_seconds_by_window[-1][1] == pytest.approx(3 * end_s)
    assert run.cold_starts == 0


def test_scale_from_zero_waits_for_a_cold_start() -> None:
    requests = [Req(10.0, 500, 20), Req(10.5, 500, 20)]
    run = _replay(requests, _tokens(0), 0, cold_start_s=60.0)
    assert run.cold_starts >= 1
    assert all(r.waited_for_replica and r.status == 200 for r in run.requests)
    assert all(r.first_token_s - r.arrival_s > 60.0 * 0.9 - 2.0 for r in run.requests)


def test_the_activators_timeout_fails_requests_a_cold_start_cannot_serve_in_time() -> None:
    # The gateway gives up on a held request after activation_timeout_s (300 s by default).
    run = _replay([Req(10.0, 500, 20)], _tokens(0), 0, cold_start_s=400.0)
    assert run.requests[0].status == 503 and run.requests[0].first_token_s < 0


def test_warm_tier_wakes_in_seconds_instead_of_a_cold_start() -> None:
    # A burst, silence long enough to scale to zero, then a second burst.
    requests = [Req(1.0 + i * 0.1, 400, 10) for i in range(5)]
    requests += [Req(400.0 + i * 0.1, 400, 10) for i in range(5)]
    run = _replay(
        requests, _tokens(0, scaleToZeroAfter="30s"), 1, warm_tier=1, cold_start_s=60.0, wake_s=5.0
    )
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
        run = _replay(_shared_prefix_trace(), _static(4, router), 4, prefix_block_tokens=512)
        cached = sum(r.cached_tokens for r in run.requests)
        rates[router] = cached / sum(r.prompt_tokens for r in run.requests)
    assert rates["prefix-affinity"] > rates["round-robin"] + 0.1


def test_routing_goes_through_the_policys_one_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from kapell.policy import routing

    calls: list[tuple[str, int]] = []
    real = routing.choose

    def spy(strategy, loads, **kw):  # type: ignore[no-untyped-def]
        calls.append((strategy, len(loads)))
        return real(strategy, loads, **kw)

    monkeypatch.setattr(routing, "choose", spy)
    _replay(_steady(50, 0.05), _static(3), 3)
    assert calls == [("least-tokens", 3)] * 50


def _samples(monkeypatch: pytest.MonkeyPatch) -> list[DemandSample]:
    samples: list[DemandSample] = []

    def record(self: StaticAutoscaler, now_s: float, sample: DemandSample) -> None:
        samples.append(sample)

    monkeypatch.setattr(StaticAutoscaler, "observe", record)
    return samples


def test_the_autoscaler_sees_tokens_at_admission_before_completion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = _samples(monkeypatch)
    requests = [Req(0.5 + i * 0.05, 1000, 400) for i in range(20)]  # 400 tokens: > 3 s each
    _replay(requests, _static(1), 1)
    early = next(s for s in samples if s.in_flight == 20)  # all admitted
    assert early.tokens_total == 0  # none finished
    assert early.admitted_tokens_total == 20 * (1000 + 400)


def test_the_autoscaler_sees_requests_waiting_inside_the_engines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = _samples(monkeypatch)
    # 600 long prompts at once: more than one replica's KV cache admits, so some wait inside it.
    _replay([Req(0.5, 8000, 200)] * 600, _static(1), 1)
    assert max(s.engine_waiting for s in samples) > 0


def test_gpu_hours_are_billed_over_the_same_window_whatever_the_reconcile_times() -> None:
    from kapell.bench.serving import _gpu_seconds_between

    # Two GPUs held throughout, sampled at different reconcile times: the same bill.
    early = TwinRun(
        requests=[], timeline=[], gpu_seconds_by_window=[(0.0, 0.0), (9.0, 18.0), (20.0, 40.0)]
    )
    late = TwinRun(
        requests=[], timeline=[], gpu_seconds_by_window=[(0.0, 0.0), (9.9, 19.8), (20.0, 40.0)]
    )
    assert _gpu_seconds_between(early, 10.0, 15.0) == pytest.approx(10.0)
    assert _gpu_seconds_between(late, 10.0, 15.0) == pytest.approx(10.0)
