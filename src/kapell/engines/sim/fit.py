"""Fit the replica latency profiles (``profiles.json``) from the measured data in ``llm-perf``.

Run once when the data or the method changes, and commit the output::

    python -m kapell.engines.sim.fit --perf-dir ../shared/data/llm-perf \
        --out src/kapell/engines/sim/profiles.json

What is measured and what is assumed:

- The dense ops of one transformer layer (QKV/O projections, MLP, norms, rope, add) come from
  Vidur's per-layer profiles (Agrawal et al., MLSys'24): the median time for a batch of
  ``num_tokens`` tokens at TP=1, kept as a table over ``num_tokens``.
- There is no H100 profile of Llama-3-8B, so its table is the A100 Llama-3-8B table times the
  measured H100/A100 ratio of Llama-2-7B at the same ``num_tokens`` (same layer widths up to
  the MLP, same kernels).
- Attention is not in the Vidur snapshot. It is analytical: decode reads every cached K/V byte
  at a fraction of peak HBM bandwidth, prefill runs the causal QK and PV matmuls at a fraction
  of peak tensor throughput (FlashAttention-2 reaches about half of peak).
- The Splitwise table (ISCA'24) covers only 70B/176B models, so it is not fitted; the fit
  prints its measured H100/A100 speed-up next to ours as a cross-check.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

_LAYER_OPS = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)  # fmt: skip
_GRID = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
         3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768)  # fmt: skip

GPUS = {
    # peak dense BF16 tensor throughput, HBM bandwidth, memory (vendor data sheets, SXM parts)
    "a100": {"name": "NVIDIA A100-SXM4-80GB", "peak_tflops": 312.0, "hbm_gbps": 2039.0,
             "memory_gib": 80.0},
    "h100": {"name": "NVIDIA H100-SXM5-80GB", "peak_tflops": 989.0, "hbm_gbps": 3350.0,
             "memory_gib": 80.0},
}  # fmt: skip
MODELS = {
    "llama3-8b": {"name": "meta-llama/Meta-Llama-3-8B", "params_b": 8.03, "n_layers": 32,
                  "max_model_len": 8192, "vidur": "Meta-Llama-3-8B"},
    "llama2-7b": {"name": "meta-llama/Llama-2-7b-hf", "params_b": 6.74, "n_layers": 32,
                  "max_model_len": 4096, "vidur": "Llama-2-7b-hf"},
}  # fmt: skip
# Engine-side assumptions, the same for every profile (vLLM-like defaults).
ASSUMPTIONS = {
    "decode_bw_efficiency": 0.7,
    "prefill_flops_efficiency": 0.5,
    "iteration_overhead_ms": 2.0,
    "gpu_memory_utilization": 0.9,
    "activation_reserve_gib": 4.0,
    "kv_block_tokens": 16,
    "max_num_seqs": 256,
    "max_batched_tokens": 8192,
    "cold_start_s": 60.0,
    "wake_s": 5.0,
}


def _layer_table(path: Path) -> tuple[dict[int, float], dict[str, float]]:
    """Median time (ms) of one layer's dense ops per ``num_tokens``, TP=1, and the shape."""
    sums: dict[int, list[float]] = defaultdict(list)
    shape: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["num_tensor_parallel_workers"] != "1":
                continue
            ms = sum(float(row[f"time_stats.{op}.median"]) for op in _LAYER_OPS)
            sums[int(row["num_tokens"])].append(ms)
            shape = {k: float(row[k]) for k in ("n_head", "n_kv_head", "n_embd", "vocab_size")}
    return {n: float(np.mean(v)) for n, v in sums.items()}, shape


def _on_grid(table: dict[int, float]) -> list[tuple[int, float]]:
    xs = np.array(sorted(table))
    ys = np.array([table[x] for x in xs])
    # Measurement noise makes a few neighbours dip (0.29 ms at 1 token, 0.28 at 2): a running
    # maximum keeps "more tokens never take less time" true in the model.
    grid = [n for n in _GRID if n <= xs[-1]]
    times = np.maximum.accumulate(np.interp(grid, xs, ys))
    return [(n, round(float(ms), 5)) for n, ms in zip(grid, times, strict=True)]


def _kv_bytes_per_token(shape: dict[str, float], n_layers: int) -> int:
    head_dim = shape["n_embd"] / shape["n_head"]
    return int(2 * shape["n_kv_head"] * head_dim * 2 * n_layers)  # K and V, 2 bytes each


def fit(perf_dir: Path) -> dict[str, dict[str, object]]:
    """Every profile, keyed by name (``h100-llama3-8b``...)."""
    vidur = perf_dir / "vidur-profiles"
    tables = {
        (gpu, model): _layer_table(vidur / f"{gpu}_{MODELS[model]['vidur']}_mlp.csv")
        for gpu, model in (("a100", "llama3-8b"), ("a100", "llama2-7b"), ("h100", "llama2-7b"))
    }
    a100_l2, h100_l2 = tables["a100", "llama2-7b"][0], tables["h100", "llama2-7b"][0]
    ratio_xs = np.array(sorted(set(a100_l2) & set(h100_l2)))
    ratio_ys = np.array([h100_l2[n] / a100_l2[n] for n in ratio_xs])
    a100_l3, l3_shape = tables["a100", "llama3-8b"]
    h100_l3 = {n: ms * float(np.interp(n, ratio_xs, ratio_ys)) for n, ms in a100_l3.items()}
    tables["h100", "llama3-8b"] = (h100_l3, l3_shape)

    profiles: dict[str, dict[str, object]] = {}
    for (gpu, model), (table, shape) in sorted(tables.items()):
        spec, hw = MODELS[model], GPUS[gpu]
        n_layers = int(spec["n_layers"])  # type: ignore[call-overload]
        kv_bytes = _kv_bytes_per_token(shape, n_layers)
        weights_gib = float(spec["params_b"]) * 2e9 / 2**30  # type: ignore[arg-type]
        free_gib = (
            float(hw["memory_gib"]) * float(ASSUMPTIONS["gpu_memory_utilization"])  # type: ignore[arg-type]
            - weights_gib
            - float(ASSUMPTIONS["activation_reserve_gib"])
        )
        profiles[f"{gpu}-{model}"] = {
            "gpu": hw["name"],
            "model": spec["name"],
            "source": "vidur" if (gpu, model) != ("h100", "llama3-8b") else "vidur-scaled",
            "n_layers": n_layers,
            "max_model_len": spec["max_model_len"],
            "n_head": int(shape["n_head"]),
            "n_kv_head": int(shape["n_kv_head"]),
            "n_embd": int(shape["n_embd"]),
            "vocab_size": int(shape["vocab_size"]),
            "weights_gib": round(weights_gib, 2),
            "peak_tflops": hw["peak_tflops"],
            "hbm_gbps": hw["hbm_gbps"],
            "kv_bytes_per_token": kv_bytes,
            "kv_cache_tokens": int(free_gib * 2**30 / kv_bytes),
            "layer_ms": _on_grid(table),
            **ASSUMPTIONS,
        }
    return profiles


def splitwise_speedup(perf_dir: Path) -> dict[str, float]:
    """Measured H100/A100 time ratio of Llama-2-70B at TP=8 (prompt and decode), a cross-check."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    with (perf_dir / "splitwise-sim" / "perf_model.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["model"] == "llama2-70b" and row["tensor_parallel"] == "8":
                times[row["hardware"], "prompt"].append(float(row["prompt_time"]))
                times[row["hardware"], "token"].append(float(row["token_time"]))
    return {
        phase: float(np.median(times["h100-80gb", phase]) / np.median(times["a100-80gb", phase]))
        for phase in ("prompt", "token")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    profiles = fit(args.perf_dir)
    args.out.write_text(json.dumps(profiles, indent=1) + "\n")
    print(
        json.dumps(
            {
                "profiles": sorted(profiles),
                "splitwise_h100_over_a100": splitwise_speedup(args.perf_dir),
            }
        )
    )


if __name__ == "__main__":
    main()
