"""The replica latency model: profiles load, and times move the way the hardware does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapell.api.errors import NotFoundError
from kapell.engines.sim.latency import load_profile, profile_names

REQUIRED = ("h100-llama3-8b", "a100-llama3-8b", "a100-llama2-7b")


def test_required_profiles_exist() -> None:
    assert set(REQUIRED) <= set(profile_names())


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(NotFoundError, match="h100-llama3-8b"):
        load_profile("tpu-llama3-8b")


@given(st.sampled_from(REQUIRED), st.integers(1, 16_000), st.integers(1, 4_000))
def test_prefill_grows_with_prompt_tokens(name: str, prompt: int, extra: int) -> None:
    profile = load_profile(name)
    assert 0 < profile.prefill_s(prompt) < profile.prefill_s(prompt + extra)


@given(st.sampled_from(REQUIRED), st.integers(1, 255), st.integers(0, 200_000))
def test_decode_step_never_shrinks_with_batch_and_grows_with_context(
    name: str, batch: int, context: int
) -> None:
    profile = load_profile(name)
    step = profile.step_s(decode_seqs=batch, decode_context_tokens=context)
    assert step <= profile.step_s(decode_seqs=batch + 1, decode_context_tokens=context)
    assert step < profile.step_s(decode_seqs=batch, decode_context_tokens=context + 1000)


@given(st.integers(2, 8_000))
def test_cached_prefix_shortens_prefill(prompt: int) -> None:
    profile = load_profile("h100-llama3-8b")
    assert profile.prefill_s(prompt, cached_tokens=prompt // 2) < profile.prefill_s(prompt)


def test_h100_is_faster_than_a100() -> None:
    h100, a100 = load_profile("h100-llama3-8b"), load_profile("a100-llama3-8b")
    assert h100.prefill_s(2000) < a100.prefill_s(2000)
    assert h100.step_s(decode_seqs=32, decode_context_tokens=32_000) < a100.step_s(
        decode_seqs=32, decode_context_tokens=32_000
    )


def test_grouped_query_attention_holds_more_kv_tokens() -> None:
    # Llama-3-8B keeps 8 KV heads, Llama-2-7B all 32: 4x the bytes per cached token.
    llama3, llama2 = load_profile("a100-llama3-8b"), load_profile("a100-llama2-7b")
    assert llama2.kv_bytes_per_token == 4 * llama3.kv_bytes_per_token
    assert llama3.kv_cache_tokens > 3 * llama2.kv_cache_tokens


def test_decode_time_is_in_a_plausible_range() -> None:
    # An 8B model in BF16 on an H100 decodes one sequence in a few milliseconds per token.
    step_s = load_profile("h100-llama3-8b").step_s(decode_seqs=1, decode_context_tokens=1000)
    assert 0.004 < step_s < 0.02
