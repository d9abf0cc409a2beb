"""The replica latency model: how long one engine iteration takes, from data.

One loader for ``profiles.json`` (written by ``kapell.engines.sim.fit`` from the Vidur profiles)
and the arithmetic of an iteration of a continuous-batching engine::

    step = overhead + n_layers * dense(tokens in the step) + LM head(sequences sampled)
           + prefill attention (causal pairs, compute bound)
           + decode attention (cached K/V bytes read, bandwidth bound)

Both the ``sim`` engine server and the discrete-event simulator call this module, so the twin
and the engine it imitates cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import numpy as np

from kapell.api.errors import KapellError, NotFoundError

GIB = 2**30


@dataclass(frozen=True)
class LatencyProfile:
    """One model on one GPU: shape, hardware and the fitted dense-op table."""

    name: str
    gpu: str
    model: str
    n_layers: int
    max_model_len: int
    n_head: int
    n_kv_head: int
    n_embd: int
    vocab_size: int
    peak_tflops: float
    hbm_gbps: float
    kv_bytes_per_token: int
    kv_cache_tokens: int
    layer_tokens: tuple[int, ...]
    layer_ms: tuple[float, ...]
    decode_bw_efficiency: float
    prefill_flops_efficiency: float
    iteration_overhead_ms: float
    kv_block_tokens: int
    max_num_seqs: int
    max_batched_tokens: int
    cold_start_s: float
    wake_s: float
    weights_gib: float = 0.0
    gpu_memory_utilization: float = 0.9
    activation_reserve_gib: float = 0.0
    compute_fraction: float = 1.0
    """Share of the measured GPU's compute this replica has (a MIG slice: g/7)."""
    bandwidth_fraction: float = 1.0
    """Share of the measured GPU's memory bandwidth (a MIG slice: memory slices/8)."""

    def dense_s(self, num_tokens: int, *, prefill: bool = True) -> float:
        """All layers' dense ops for a step of ``num_tokens`` tokens (linear past the table).

        The table was measured on a whole GPU: a step with prompt tokens is stretched by the
        compute share, a decode-only step (weight reads) by the bandwidth share.
        """
        share = self.compute_fraction if prefill else self.bandwidth_fraction
        return self._table_dense_s(num_tokens) / share

    def _table_dense_s(self, num_tokens: int) -> float:
        xs, ys = self.layer_tokens, self.layer_ms
        if num_tokens <= xs[-1]:
            per_layer_ms = float(np.interp(num_tokens, xs, ys))
        else:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            per_layer_ms = ys[-1] + slope * (num_tokens - xs[-1])
        return per_layer_ms * self.n_layers / 1e3

    def lm_head_s(self, sampled_seqs: int) -> float:
        """The vocabulary projection: read once, then compute per sampled sequence."""
        if sampled_seqs == 0:
            return 0.0
        weights = self.vocab_size * self.n_embd
        read_s = weights * 2 / (self.hbm_gbps * 1e9 * self.decode_bw_efficiency)
        flops_s = (
            2 * weights * sampled_seqs / (self.peak_tflops * 1e12 * self.prefill_flops_efficiency)
        )
        return max(read_s, flops_s)

    @property
    def kv_read_s_per_token(self) -> float:
        """Decode attention time per cached token of context (all layers)."""
        return self.kv_bytes_per_token / (self.hbm_gbps * 1e9 * self.decode_bw_efficiency)

    def prefill_attention_s(self, new_tokens: int, cached_tokens: int) -> float:
        """Causal attention of ``new_tokens`` over ``cached_tokens`` plus themselves."""
        pairs = new_tokens * cached_tokens + new_tokens * (new_tokens + 1) / 2
        flops = 4 * pairs * self.n_embd * self.n_layers  # QK^T and PV, 2 flops per MAC
        return flops / (self.peak_tflops * 1e12 * self.prefill_flops_efficiency)

    def step_s(
        self,
        *,
        prefill_tokens: int = 0,
        prefill_attention_s: float = 0.0,
        decode_seqs: int = 0,
        decode_context_tokens: int = 0,
        sampled_seqs: int | None = None,
    ) -> float:
        """One iteration: prefill chunks plus one token for each of ``decode_seqs`` sequences."""
        tokens = prefill_tokens + decode_seqs
        if tokens == 0:
            return 0.0
        sampled = decode_seqs if sampled_seqs is None else sampled_seqs
        return (
            self.iteration_overhead_ms / 1e3
            + self.dense_s(tokens, prefill=prefill_tokens > 0)
            + self.lm_head_s(sampled)
            + prefill_attention_s
            + decode_context_tokens * self.kv_read_s_per_token
        )

    def decode_step_coefficients(self, batch: int) -> tuple[float, float]:
        """``(a_s, b_s)`` with a decode-only step taking ``a_s + b_s * total_context_tokens``."""
        return self.step_s(decode_seqs=batch), self.kv_read_s_per_token

    def prefill_s(self, prompt_tokens: int, cached_tokens: int = 0) -> float:
        """A lone request's time to first token on an idle replica (chunked like the engine)."""
        total_s, done = 0.0, cached_tokens
        while done < prompt_tokens:
            chunk = min(self.max_batched_tokens, prompt_tokens - done)
            last = done + chunk >= prompt_tokens
            total_s += self.step_s(
                prefill_tokens=chunk,
                prefill_attention_s=self.prefill_attention_s(chunk, done),
                sampled_seqs=1 if last else 0,
            )
            done += chunk
        return total_s


@cache
def _profiles_data() -> dict[str, dict[str, object]]:
    text = resources.files("kapell.engines.sim").joinpath("profiles.json").read_text()
    data: dict[str, dict[str, object]] = json.loads(text)
    return data


def profile_names() -> list[str]:
    """Every profile the model knows, sorted."""
    return sorted(_profiles_data())


@cache
def load_profile(name: str) -> LatencyProfile:
    """The profile called ``name`` (e.g. ``h100-llama3-8b``)."""
    data = _profiles_data()
    if name not in data:
        raise NotFoundError(
            f"unknown latency profile {name!r}: expected one of {', '.join(sorted(data))}"
        )
    raw = dict(data[name])
    table = raw.pop("layer_ms")
    raw.pop("source", None)
    return LatencyProfile(
        name=name,
        layer_tokens=tuple(int(n) for n, _ in table),  # type: ignore[attr-defined]
        layer_ms=tuple(float(ms) for _, ms in table),  # type: ignore[attr-defined]
        **raw,  # type: ignore[arg-type]
    )


class ReplicaSizeError(KapellError):
    """A replica size (GPU slice) is malformed or cannot hold the model."""


def slice_profile(
    profile: LatencyProfile,
    *,
    slice_name: str,
    compute_fraction: float,
    bandwidth_fraction: float,
    memory_gib: float,
) -> LatencyProfile:
    """``profile`` (a whole GPU) on a fraction of that GPU, e.g. a MIG slice.

    Compute-bound work (prefill, attention over prompts) slows by ``1/compute_fraction``,
    bandwidth-bound work (decode weight and KV reads) by ``1/bandwidth_fraction``; the per-step
    overhead stays. The KV cache is the slice's memory with the whole-GPU profile's own
    overheads taken off (the same utilisation cap, weights and activation reserve).
    """
    if not (0 < compute_fraction <= 1 and 0 < bandwidth_fraction <= 1):
        raise ReplicaSizeError(
            f"slice {slice_name}: compute and bandwidth fractions must be in (0, 1]"
        )
    free_gib = (
        memory_gib * profile.gpu_memory_utilization
        - profile.weights_gib
        - profile.activation_reserve_gib
    )
    kv_tokens = int(max(free_gib, 0.0) * GIB / profile.kv_bytes_per_token)
    if kv_tokens < profile.max_model_len:
        raise ReplicaSizeError(
            f"replica size {slice_name}: {memory_gib:g} GiB cannot hold {profile.model} "
            f"({profile.weights_gib:g} GiB of weights, {profile.activation_reserve_gib:g} GiB "
            f"reserve, one {profile.max_model_len}-token sequence); pick a larger slice"
        )
    return replace(
        profile,
        name=f"{profile.name}@{slice_name}",
        peak_tflops=profile.peak_tflops * compute_fraction,
        hbm_gbps=profile.hbm_gbps * bandwidth_fraction,
        kv_cache_tokens=kv_tokens,
        compute_fraction=profile.compute_fraction * compute_fraction,
        bandwidth_fraction=profile.bandwidth_fraction * bandwidth_fraction,
    )
