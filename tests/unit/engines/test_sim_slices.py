"""Slice profiles: a whole-GPU latency profile on a fraction of the GPU (a MIG slice)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapell.backends.sim.slices import replica_size, slice_names, smallest_fitting
from kapell.engines.sim.latency import LatencyProfile, ReplicaSizeError, load_profile, slice_profile

WHOLE = load_profile("h100-llama3-8b")
STEPS = (
    {"prefill_tokens": 4096, "prefill_attention_s": WHOLE.prefill_attention_s(4096, 0)},
    {"decode_seqs": 64, "decode_context_tokens": 64 * 1500},
    {"prefill_tokens": 512, "decode_seqs": 32, "decode_context_tokens": 32 * 800},
)


def _sliced(compute: float, bandwidth: float, memory_gib: float) -> LatencyProfile:
    return slice_profile(
        WHOLE,
        slice_name="x",
        compute_fraction=compute,
        bandwidth_fraction=bandwidth,
        memory_gib=memory_gib,
    )


def test_full_slice_is_the_whole_gpu_profile() -> None:
    full = replica_size(WHOLE, "7g.80gb")
    assert full.gpu_fraction == 1.0
    assert full.profile.kv_cache_tokens == pytest.approx(WHOLE.kv_cache_tokens, rel=1e-3)
    for step in STEPS:
        assert full.profile.step_s(**step) == pytest.approx(WHOLE.step_s(**step), rel=1e-12)
    assert full.profile.prefill_s(3000) == pytest.approx(WHOLE.prefill_s(3000), rel=1e-12)


fractions = st.floats(min_value=0.1, max_value=1.0)
memories = st.floats(min_value=25.0, max_value=80.0)


@given(fractions, fractions, fractions, fractions, memories, memories)
def test_a_smaller_slice_is_never_faster_nor_holds_more(
    c1: float, c2: float, b1: float, b2: float, m1: float, m2: float
) -> None:
    small = _sliced(min(c1, c2), min(b1, b2), min(m1, m2))
    large = _sliced(max(c1, c2), max(b1, b2), max(m1, m2))
    assert small.kv_cache_tokens <= large.kv_cache_tokens
    for step in STEPS:
        assert small.step_s(**step) >= large.step_s(**step)
    assert small.prefill_s(2000) >= large.prefill_s(2000)


def test_prefill_scales_with_compute_and_decode_with_bandwidth() -> None:
    compute_half = _sliced(0.5, 1.0, 80.0)
    bandwidth_half = _sliced(1.0, 0.5, 80.0)
    decode = {"decode_seqs": 64, "decode_context_tokens": 64 * 1500}
    overhead_s = WHOLE.iteration_overhead_ms / 1e3
    assert compute_half.step_s(**decode) == WHOLE.step_s(**decode)
    assert bandwidth_half.step_s(**decode) - overhead_s == pytest.approx(
        2 * (WHOLE.step_s(**decode) - overhead_s), rel=0.01
    )  # the LM head's flops, compute bound, are a rounding error at batch 64
    assert bandwidth_half.prefill_s(4096) == pytest.approx(WHOLE.prefill_s(4096), rel=0.01)
    assert compute_half.prefill_s(4096) - overhead_s == pytest.approx(
        2 * (WHOLE.prefill_s(4096) - overhead_s), rel=0.01
    )


def test_slices_that_cannot_hold_the_weights_are_refused() -> None:
    for name in ("1g.10gb", "1g.20gb", "2g.20gb"):
        with pytest.raises(ReplicaSizeError, match="cannot hold"):
            replica_size(WHOLE, name)
    with pytest.raises(ReplicaSizeError, match="cannot hold"):
        _sliced(1.0, 1.0, WHOLE.weights_gib)
    with pytest.raises(ReplicaSizeError, match="expected 'gpu' or a MIG profile"):
        replica_size(WHOLE, "5g.50gb")


def test_sizes_come_from_the_placement_table_smallest_first() -> None:
    names = slice_names(WHOLE)
    assert names[0] == "1g.10gb" and names[-1] == "7g.80gb" and len(names) == 6
    fractions_ = [replica_size(WHOLE, n).gpu_fraction for n in names if n.startswith(("3g", "4g"))]
    assert fractions_ == [3 / 7, 4 / 7]


def test_auto_size_is_the_smallest_slice_meeting_the_slo() -> None:
    assert smallest_fitting(WHOLE, 2000, 1.0, 0.1).name == "3g.40gb"
    # a prompt the 3g slice prefills too slowly for the target moves up a size
    slow = replica_size(WHOLE, "3g.40gb").profile.prefill_s(8000)
    assert smallest_fitting(WHOLE, 8000, slow * 0.99, 0.1).name == "4g.40gb"
    assert smallest_fitting(WHOLE, 8000, 0.001, 0.1).name == "gpu"
