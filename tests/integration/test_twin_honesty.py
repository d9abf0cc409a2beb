"""Honesty checks: the twin's latencies and its scaling decisions match the real thing.

Scaling: the same load step is sent through a real `kapell up` with sim engines and replayed
in the twin (which runs the same controller, scaler, activator and balancer on a virtual
clock); the desired replica counts, sampled every 0.5 s, must agree within
``TIMELINE_TOLERANCE`` replicas on average, reach the same peak, within ``PEAK_LAG_S``.

Sizing: a Model sized ``auto`` starts on the sizing policy's first guess and is resized by a
load the guess cannot serve; `kapell up` and the twin must pick the same sizes, in the same
order, the resize within ``SIZE_LAG_S`` of each other.

Latencies:

A short slice of the Azure conversation trace is sent in real time, with its own arrival
times, through kapell's real gateway to two ``sim`` engine processes; the same slice is
replayed in the twin with the same router and replica count. Their TTFT and TPOT
distributions must agree within 15% at p50 and p90.

The twin models replicas, not the HTTP path, and the shared 2-core test machine adds tens of
milliseconds to every hop (client, gateway, engine: three processes), as much as an 8B model's
modelled prefill. Two things keep that out of the comparison, both applied to every request
alike: the replay runs in slow motion (engines take ``--speedup 0.1``, so every modelled
duration is x10, arrivals are spread x10, and measured times are scaled back by 0.1), and the
path's own latency, measured just before with one-token requests on the idle cluster, is
subtracted from each measured TTFT. Outputs are capped at 32 tokens (on both sides).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from kapell.api import Model
from kapell.api.loader import load_text
from kapell.backends.sim.twin import SimSettings
from kapell.bench.serving import ServeOptions, twin_model
from kapell.bench.traces import read_trace, slice_trace
from kapell.bench.twin_replay import Twin, TwinConfig
from kapell.engines.sim.latency import load_profile

from .local.conftest import Instance, kapell_up  # noqa: F401 (the fixture)
from .sim_procs import sim_cluster

StartFn = Callable[..., Instance]

TRACE = (
    Path(__file__).resolve().parents[2]
    / "../shared/data/llm-traces/AzureLLMInferenceTrace_conv.csv"
)
PROFILE = "a100-llama3-8b"
REPLICAS = 2
SLICE_START_S, SLICE_S, MAX_OUTPUT = 600.0, 10.0, 32
SPEEDUP = 0.1
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


# --- scaling decisions: the same load step through `kapell up` and through the twin ---------

STEP_SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: step}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "1"]}
  scaling: {minReplicas: 1, maxReplicas: 4, targetTokensPerSecond: 1000, scaleToZeroAfter: 10m}
"""
PHASES = ((0.0, 20.0, 2.0), (20.0, 60.0, 8.0), (60.0, 80.0, 2.0))
"""``(from_s, to_s, requests_per_s)``: 600 tokens/s, then 2,400 (three replicas at 1,000), then
600 again (within the 60 s scale-down delay, so the fleet holds)."""
STEP_PROMPT, STEP_OUTPUT = 250, 50
SAMPLE_S = 0.5
TIMELINE_TOLERANCE = 0.25
"""Mean absolute difference of the desired replica count, sampled every ``SAMPLE_S``: the
live run's decisions lag the twin's by up to a reconcile period (0.5 s) plus the HTTP path."""
PEAK_LAG_S = 5.0


@dataclass(frozen=True)
class _StepRequest:
    arrival_s: float
    prompt_tokens: int = STEP_PROMPT
    output_tokens: int = STEP_OUTPUT
    prefix_blocks: tuple[int, ...] = ()


def _step_requests() -> list[_StepRequest]:
    arrivals = []
    for start_s, end_s, rate in PHASES:
        n = round((end_s - start_s) * rate)
        arrivals += [start_s + i / rate for i in range(n)]
    return [_StepRequest(t) for t in arrivals]


async def _drive(
    gateway_url: str,
    admin_url: str,
    name: str,
    requests: list[_StepRequest],
    end_s: float,
    lead_s: float = 0.0,
) -> list[tuple[float, dict[str, Any]]]:
    """Send ``requests`` to Model ``name`` at their times (counted from ``lead_s`` ago); its
    status every ``SAMPLE_S`` meanwhile, from ``lead_s`` until ``end_s``, as ``(seconds on
    the requests' clock when read, status)``."""
    client = AsyncOpenAI(base_url=gateway_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    start_s = time.perf_counter() - lead_s

    async def one(request: _StepRequest) -> None:
        await asyncio.sleep(max(0.0, start_s + request.arrival_s - time.perf_counter()))
        # The sim engine counts words, the gateway 4 characters a token.
        prompt = "tok " * request.prompt_tokens
        reply = await client.completions.create(
            model=name, prompt=prompt, max_tokens=request.output_tokens
        )
        assert reply.usage is not None
        assert reply.usage.completion_tokens == request.output_tokens

    async def sample() -> list[tuple[float, dict[str, Any]]]:
        samples: list[tuple[float, dict[str, Any]]] = []
        async with httpx.AsyncClient() as http:
            for i in range(int((end_s - lead_s) / SAMPLE_S)):
                due_s = start_s + lead_s + i * SAMPLE_S
                await asyncio.sleep(max(0.0, due_s - time.perf_counter()))
                status = (await http.get(admin_url + "/admin/v1/status")).json()
                [model] = [r for r in status["resources"] if r["metadata"]["name"] == name]
                samples.append((time.perf_counter() - start_s, model["status"]))
        return samples

    try:
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(r) for r in requests))
        return await sampler
    finally:
        await client.close()


def _twin_desired(requests: list[_StepRequest]) -> list[float]:
    [model] = load_text(STEP_SPEC)
    assert isinstance(model, Model)
    config = TwinConfig(SimSettings(profile=load_profile("h100-llama3-8b"), cold_start_s=1.0))
    run = Twin(config, requests, model).replay()
    times = [t for t, *_ in run.timeline]
    return [
        float(run.timeline[max(0, bisect.bisect_right(times, i * SAMPLE_S) - 1)][3])
        for i in range(int(PHASES[-1][1] / SAMPLE_S))
    ]


def _first_at(values: list[float], level: float) -> float:
    return next(i for i, v in enumerate(values) if v >= level) * SAMPLE_S


@pytest.mark.slow
def test_twin_scales_like_kapell_up(kapell_up: StartFn) -> None:  # noqa: F811
    requests = _step_requests()
    twin = _twin_desired(requests)
    instance = kapell_up(STEP_SPEC, 1)
    sampled = asyncio.run(
        _drive(instance.gateway_url, instance.admin_url, "step", requests, PHASES[-1][1])
    )
    live = [float(status["desiredReplicas"]) for _, status in sampled]
    difference = float(np.mean(np.abs(np.array(live) - np.array(twin))))
    report = {
        "mean_abs_difference": round(difference, 3),
        "peak": (max(twin), max(live)),
        "peak_reached_s": (_first_at(twin, max(twin)), _first_at(live, max(live))),
        "twin": twin[::4],
        "live": live[::4],
    }
    print(report)
    assert max(twin) == max(live) == 3, report
    assert abs(_first_at(twin, 3) - _first_at(live, 3)) <= PEAK_LAG_S, report
    assert difference <= TIMELINE_TOLERANCE, report


# --- sizing decisions: an `auto` Model resized by the same load through both --------------

AUTO_SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: sized}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "1"]}
  resources: {gpu: auto}
  scaling: {minReplicas: 1, maxReplicas: 1, scaleToZeroAfter: 10m}
"""
AUTO_LOAD_S, AUTO_RATE, AUTO_PROMPT, AUTO_OUTPUT = 40.0, 4.0, 4000, 16
"""16k tokens/s of 4,000-token prompts: more than one 3g.40gb slice (the first guess, with no
demand seen) or 4g.40gb slice serves within the SLO, less than one GPU; ``maxReplicas: 1``
leaves the sizing policy one way to serve it, a whole GPU."""
SIZE_LAG_S = 3.5
"""How far apart the two resizes may fall: the live Model's first sizing is known to the second
(its condition's timestamp), the sizer evaluates at reconciles (up to 2 s apart), and the live
size is sampled every ``SAMPLE_S`` over HTTP (1.2-2.3 s apart in four runs here)."""


def _auto_requests(lead_s: float) -> list[_StepRequest]:
    """The load, starting ``lead_s`` after the Model was sized first."""
    count = round(AUTO_LOAD_S * AUTO_RATE)
    return [_StepRequest(lead_s + i / AUTO_RATE, AUTO_PROMPT, AUTO_OUTPUT) for i in range(count)]


def _sized_since_s(instance: Instance) -> float:
    """Seconds since the live Model was first sized (its ``Sized`` condition's transition)."""
    [model] = [r for r in instance.status()["resources"] if r["metadata"]["name"] == "sized"]
    [sized] = [c for c in model["status"]["conditions"] if c["type"] == "Sized"]
    at = datetime.fromisoformat(sized["lastTransitionTime"].replace("Z", "+00:00"))
    return (datetime.now(UTC) - at).total_seconds()


@pytest.mark.slow
def test_twin_resizes_an_auto_model_like_kapell_up(kapell_up: StartFn) -> None:  # noqa: F811
    instance = kapell_up(AUTO_SPEC, 1)
    lead_s = _sized_since_s(instance)
    requests = _auto_requests(lead_s)
    end_s = lead_s + AUTO_LOAD_S
    sampled = asyncio.run(
        _drive(instance.gateway_url, instance.admin_url, "sized", requests, end_s, lead_s)
    )
    live: list[tuple[float, str]] = []
    for t_s, status in sampled:
        if not live or live[-1][1] != status["replicaSize"]:
            live.append((t_s, status["replicaSize"]))
    [model] = load_text(AUTO_SPEC)
    assert isinstance(model, Model)
    config = TwinConfig(SimSettings(profile=load_profile("h100-llama3-8b"), cold_start_s=1.0))
    twin = Twin(config, requests, model).replay().sizes
    report = {"lead_s": round(lead_s, 2), "live": live, "twin": twin}
    print(report)
    assert [size for _, size in live] == [size for _, size in twin] == ["3g.40gb", "gpu"], report
    assert abs(live[1][0] - twin[1][0]) <= SIZE_LAG_S, report
