"""The synthetic bursty trace: reproducible from its seed, bursty, long-prompted, readable back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kapell.bench.synthetic import BurstyShape, bursty_trace, write_jsonl
from kapell.bench.traces import read_trace

SHAPE = BurstyShape(duration_s=1200.0, rate_per_s=4.0, seed=3)


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    assert bursty_trace(SHAPE) == bursty_trace(SHAPE)
    assert bursty_trace(SHAPE).requests != bursty_trace(BurstyShape(seed=4)).requests


def test_on_phases_carry_the_load_and_prompts_are_long() -> None:
    trace = bursty_trace(SHAPE)
    arrivals = np.array([r.arrival_s for r in trace.requests])
    per_10s = np.bincount((arrivals // 10).astype(int), minlength=120)
    # ON/OFF: many quiet 10 s bins (the OFF trickle) and bins far above the mean.
    assert (per_10s <= 0.2 * per_10s.mean()).mean() > 0.3
    assert per_10s.max() > 3 * per_10s.mean()
    prompts = np.array([r.prompt_tokens for r in trace.requests])
    assert 2000 < np.median(prompts) < 4500 and prompts.max() <= SHAPE.prompt_max
    assert all(r.prefix_blocks for r in trace.requests if r.prompt_tokens >= 1024)


def test_written_as_mooncake_jsonl_it_reads_back(tmp_path: Path) -> None:
    trace = bursty_trace(SHAPE)
    path = tmp_path / "bursty.jsonl"
    write_jsonl(trace, path)
    back = read_trace(path)
    assert len(back.requests) == len(trace.requests)
    first, again = trace.requests[5], back.requests[5]
    assert (again.prompt_tokens, again.output_tokens, again.prefix_blocks) == (
        first.prompt_tokens,
        first.output_tokens,
        first.prefix_blocks,
    )
    assert (
        abs(
            (again.arrival_s - back.requests[0].arrival_s)
            - (first.arrival_s - trace.requests[0].arrival_s)
        )
        < 2e-3
    )
