"""Synthetic bursty traces with long prompts and on/off phases, for testing autoscalers on
load they were not developed on.

The shape: ON phases (exponential lengths, mean ``on_mean_s``) separated by OFF phases (mean
``off_mean_s``) in which only a trickle (``off_rate_share`` of the ON rate) arrives; within an
ON phase arrivals are Poisson at a rate drawn per phase (log-normal around ``rate_per_s``, so
some bursts are several times others). Prompts are log-normal around ``prompt_median`` tokens
(capped at ``prompt_max``), outputs around ``output_median``: long prompts make prefill, not
decode, the cost. A share of each prompt is a shared prefix (one of ``documents`` documents,
Zipf-popular), given as Mooncake-style 512-token block ids, so prefix caching and affinity
have something to find. Written as Mooncake JSONL, so ``kapell sim serve`` reads it as any
other trace. Everything follows from ``seed``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from kapell.bench.traces import MOONCAKE_BLOCK_TOKENS, Trace, TraceRequest


@dataclass(frozen=True)
class BurstyShape:
    """The knobs of one synthetic trace (defaults: the one docs/simulator.md measures)."""

    duration_s: float = 1800.0
    rate_per_s: float = 6.0
    rate_sigma: float = 0.6
    on_mean_s: float = 90.0
    off_mean_s: float = 150.0
    off_rate_share: float = 0.05
    prompt_median: int = 3000
    prompt_sigma: float = 0.8
    prompt_max: int = 7500
    output_median: int = 150
    output_sigma: float = 0.7
    output_max: int = 1024
    documents: int = 50
    prefix_share: float = 0.5
    seed: int = 0


def bursty_trace(shape: BurstyShape) -> Trace:
    """A trace of ``shape``: see the module docstring."""
    rng = random.Random(shape.seed)
    requests: list[TraceRequest] = []
    t_s, on, next_block = 0.0, True, 1_000_000
    while t_s < shape.duration_s:
        phase_s = rng.expovariate(1.0 / (shape.on_mean_s if on else shape.off_mean_s))
        rate = shape.rate_per_s * math.exp(rng.gauss(-(shape.rate_sigma**2) / 2, shape.rate_sigma))
        if not on:
            rate = shape.rate_per_s * shape.off_rate_share
        end_s = min(t_s + phase_s, shape.duration_s)
        arrival_s = t_s + rng.expovariate(rate)
        while arrival_s < end_s:
            prompt = _lognormal(rng, shape.prompt_median, shape.prompt_sigma, shape.prompt_max)
            output = _lognormal(rng, shape.output_median, shape.output_sigma, shape.output_max)
            blocks = prompt // MOONCAKE_BLOCK_TOKENS
            shared = min(blocks, round(blocks * shape.prefix_share))
            document = min(int(rng.paretovariate(1.2)), shape.documents)
            prefix = tuple(document * 1000 + i for i in range(shared))
            own = tuple(range(next_block, next_block + blocks - shared))
            next_block += blocks - shared
            requests.append(TraceRequest(arrival_s, prompt, output, prefix + own))
            arrival_s += rng.expovariate(rate)
        t_s, on = end_s, not on
    return Trace(f"bursty-seed{shape.seed}", tuple(requests), MOONCAKE_BLOCK_TOKENS)


def _lognormal(rng: random.Random, median: int, sigma: float, cap: int) -> int:
    return max(1, min(cap, round(median * math.exp(rng.gauss(0.0, sigma)))))


def write_jsonl(trace: Trace, path: Path) -> None:
    """``trace`` as Mooncake JSONL (``timestamp`` in ms, lengths, ``hash_ids``)."""
    with path.open("w") as f:
        for r in trace.requests:
            row = {
                "timestamp": round(r.arrival_s * 1000),
                "input_length": r.prompt_tokens,
                "output_length": r.output_tokens,
                "hash_ids": list(r.prefix_blocks),
            }
            f.write(json.dumps(row) + "\n")
