"""The continuous batcher shared by the sim engine and the twin."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.engines.sim.batcher import ContinuousBatcher, PrefixCache, SimSequence
from kapell.engines.sim.latency import load_profile

PROFILE = load_profile("h100-llama3-8b")
requests = st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 60)), min_size=1, max_size=12)


def _run_to_end(batcher: ContinuousBatcher) -> float:
    elapsed_s = 0.0
    while (plan := batcher.plan()) is not None:
        elapsed_s += plan.duration_s
        batcher.apply(plan)
        assert batcher.reserved_kv_tokens <= PROFILE.kv_cache_tokens
    return elapsed_s


@given(requests)
@settings(max_examples=40)
def test_every_request_gets_exactly_its_tokens(shapes: list[tuple[int, int]]) -> None:
    batcher = ContinuousBatcher(PROFILE, prefix_block_tokens=16)
    seqs = [SimSequence(p, o, tag=i) for i, (p, o) in enumerate(shapes)]
    for seq in seqs:
        batcher.submit(seq)
    _run_to_end(batcher)
    assert all(s.done and s.generated(batcher.iteration) == s.max_output_tokens for s in seqs)
    assert batcher.reserved_kv_tokens == 0 and not batcher.has_work()


@given(st.lists(st.tuples(st.integers(1, 2000), st.integers(2, 80)), min_size=1, max_size=8))
@settings(max_examples=40)
def test_decode_run_equals_its_single_steps(shapes: list[tuple[int, int]]) -> None:
    stepped = ContinuousBatcher(PROFILE, prefix_block_tokens=16)
    jumped = ContinuousBatcher(PROFILE, prefix_block_tokens=16)
    for p, o in shapes:
        stepped.submit(SimSequence(p, o))
        jumped.submit(SimSequence(p, o))
    for b in (stepped, jumped):
        while not b.decode_only():  # run the prefills
            plan = b.plan()
            assert plan is not None
            b.apply(plan)
    k = jumped.iterations_to_next_finish()
    run_s = jumped.decode_run_s(k)
    step_sum_s = 0.0
    for _ in range(k):
        plan = stepped.plan()
        assert plan is not None and not plan.prefill
        step_sum_s += plan.duration_s
        stepped.apply(plan)
    assert run_s == pytest.approx(step_sum_s, rel=1e-9)
    finished = jumped.apply_decode_run(k).finished
    assert finished and len(jumped.decoding) == len(stepped.decoding)


@given(st.integers(1, 4), st.floats(0.0, 2.0))
def test_iterations_by_finds_the_boundary_after_a_time(batch: int, elapsed_s: float) -> None:
    batcher = ContinuousBatcher(PROFILE, prefix_block_tokens=16)
    for _ in range(batch):
        batcher.submit(SimSequence(500, 10_000))
    while not batcher.decode_only():
        plan = batcher.plan()
        assert plan is not None
        batcher.apply(plan)
    k = batcher.iterations_by(elapsed_s)
    assert batcher.decode_run_s(k) >= elapsed_s
    assert k == 1 or batcher.decode_run_s(k - 1) < elapsed_s


def test_shared_prefix_skips_prefill_on_the_second_request() -> None:
    batcher = ContinuousBatcher(PROFILE, prefix_block_tokens=512)
    first = SimSequence(4096, 4, prefix_blocks=tuple(range(8)))
    batcher.submit(first)
    _run_to_end(batcher)
    second = SimSequence(4096, 4, prefix_blocks=tuple(range(8)))
    batcher.submit(second)
    _run_to_end(batcher)
    assert first.cached_tokens == 0
    assert second.cached_tokens == 4095  # all but the last token, which must be computed
    assert batcher.prefix_hit_tokens == 4095


def test_prefix_cache_evicts_least_recently_used() -> None:
    cache = PrefixCache(capacity_blocks=3)
    cache.insert([1, 2, 3])
    assert cache.leading_hits([1]) == 1  # 1 is now the most recent
    cache.insert([4])
    assert cache.leading_hits([2]) == 0
    assert cache.leading_hits([1, 3, 4]) == 3


def test_kv_capacity_limits_the_batch() -> None:
    batcher = ContinuousBatcher(PROFILE, prefix_block_tokens=16)
    size = PROFILE.kv_cache_tokens // 3
    for _ in range(4):
        batcher.submit(SimSequence(size - 10, 10))
    batcher.plan()
    assert batcher.num_running == 3 and batcher.num_waiting == 1


def test_abort_frees_the_reservation() -> None:
    batcher = ContinuousBatcher(PROFILE, prefix_block_tokens=16)
    seq = SimSequence(100, 50)
    batcher.submit(seq)
    plan = batcher.plan()
    assert plan is not None
    batcher.apply(plan)
    batcher.abort(seq)
    assert batcher.reserved_kv_tokens == 0 and batcher.plan() is None
