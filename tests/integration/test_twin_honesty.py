"""Honesty check: the twin's latencies match a real replay through the gateway and sim engines.

A short slice of the Azure conversation trace is sent in real time, with its own arrival
times, through kapell's real gateway to two ``sim`` engine processes; the same slice is
replayed in the twin with the same router and replica count. Their TTFT and TPOT
distributions must agree within 15% at p50 and p90.

The twin models replicas, not the HTTP path, and the shared 2-core test machine adds tens of
milliseconds to every hop (client, gateway, engine: three processes), as much as an 8B model's
modelled prefill. Two things keep that out of the comparison, both applied to every request
alike: the replay runs in slow motion (engines take ``--speedup 0.2``, so every modelled
duration is x5, arrivals are spread x5, and measured times are scaled back by 0.2), and the
path's own latency, measured just before with one-token requests on the idle cluster, is
subtracted from each measured TTFT. Outputs are capped at 32 tokens (on both sides).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from openai import AsyncOpenAI

from kapell.backends.sim.twin import SimSettings
from kapell.bench.serving import ServeOptions, twin_model
from kapell.bench.traces import read_trace, slice_trace
from kapell.bench.twin_replay import Twin, TwinConfig
from kapell.engines.sim.latency import load_profile

from .sim_procs import sim_cluster

TRACE = (
    Path(__file__).resolve().parents[2]
    / "../shared/data/llm-traces/AzureLLMInferenceTrace_conv.csv"
)
PROFILE = "a100-llama3-8b"
REPLICAS = 2
SLICE_START_S, SLICE_S, MAX_OUTPUT = 600.0, 10.0, 32
SPEEDUP = 0.2
PROBES = 8
TOLERANCE = 0.15


def _requests() -> list:  # type: ignore[type-arg]
    trace = slice_trace(read_trace(TRACE), SLICE_START_S, SLICE_S)
    return [replace(r, output_tokens=min(r.output_tokens, MAX_OUTPUT)) for r in trace.requests]


async def _send(client: AsyncOpenAI, prompt: list[int], max_tokens: int) -> tuple[float, float]:
    sent_s = time.perf_counter()
    times: list[float] = []
    stream = await client.completions.create(
        model="llama", prompt=prompt, max_tokens=max_tokens, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter())
    assert len(times) == max_tokens
    tpot = (times[-1] - times[0]) / (max_tokens - 1) if max_tokens > 1 else float("nan")
    return times[0] - sent_s, tpot


async def _replay(base_url: str, requests: list) -> tuple[list[tuple[float, float]], float]:  # type: ignore[type-arg]
    """Measured (TTFT, TPOT) per request in model seconds, and the path latency removed."""
    rng = random.Random(7)
    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    probe_model_s = load_profile(PROFILE).prefill_s(1) / SPEEDUP
    probes = [(await _send(client, [1], 1))[0] for _ in range(PROBES)]
    path_s = max(float(np.median(probes)) - probe_model_s, 0.0)
    start_s = time.perf_counter()

    async def one(request) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        prompt = [rng.randrange(1, 100_000) for _ in range(request.prompt_tokens)]
        await asyncio.sleep(max(0.0, start_s + request.arrival_s / SPEEDUP - time.perf_counter()))
        ttft_s, tpot_s = await _send(client, prompt, request.output_tokens)
        return (ttft_s - path_s) * SPEEDUP, tpot_s * SPEEDUP

    try:
        return list(await asyncio.gather(*(one(r) for r in requests))), path_s
    finally:
        await client.close()


def _percentiles(values: np.ndarray) -> np.ndarray:
    return np.percentile(values[~np.isnan(values)], [50, 90])


@pytest.mark.slow
@pytest.mark.skipif(not TRACE.exists(), reason="needs ../shared/data/llm-traces")
def test_twin_agrees_with_a_real_replay() -> None:
    requests = _requests()
    config = TwinConfig(
        SimSettings(profile=load_profile(PROFILE), cold_start_s=0.0), initial_replicas=REPLICAS
    )
    model = twin_model(ServeOptions(profile=PROFILE), "static", REPLICAS)
    twin = Twin(config, requests, model).replay()
    twin_ttft = np.array([r.first_token_s - r.arrival_s for r in twin.requests])
    twin_tpot = np.array(
        [
            (r.finish_s - r.first_token_s) / (r.output_tokens - 1)
            if r.output_tokens > 1
            else np.nan
            for r in twin.requests
        ]
    )
    engine_args = ("--cold-start-s", "0", "--speedup", str(SPEEDUP))
    with sim_cluster(PROFILE, "llama", REPLICAS, *engine_args) as gateway:
        measured, path_s = asyncio.run(_replay(gateway, requests))
    real_ttft = np.array([m[0] for m in measured])
    real_tpot = np.array([m[1] for m in measured])
    print(f"path latency removed from each TTFT: {path_s * 1e3:.1f} ms (before scaling)")
    report = {
        "ttft_p50_p90": (_percentiles(twin_ttft), _percentiles(real_ttft)),
        "tpot_p50_p90": (_percentiles(twin_tpot), _percentiles(real_tpot)),
    }
    print(report)
    for twin_values, real_values in report.values():
        assert np.all(np.abs(real_values - twin_values) <= TOLERANCE * twin_values), report
