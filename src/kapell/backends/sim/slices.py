"""Replica sizes for the twin: a whole GPU or one MIG slice of it.

The slice shapes come from ``kapell.policy.placement.mig`` (the table the placement policy
uses), and the latency model derives the slice's timings and KV cache from the whole-GPU
profile (``kapell.engines.sim.latency.slice_profile``). A slice is billed as its share of the
GPU's compute slices, g/7.
"""

from __future__ import annotations

from dataclasses import dataclass

from kapell.engines.sim.latency import LatencyProfile, ReplicaSizeError, slice_profile
from kapell.policy.placement.mig import COMPUTE_SLICES, MEMORY_SLICES, profiles_for

WHOLE_GPU = "gpu"


@dataclass(frozen=True)
class ReplicaSize:
    """What one replica runs on: its latency profile and the share of a GPU it is billed."""

    name: str
    profile: LatencyProfile
    gpu_fraction: float


def mig_model(profile: LatencyProfile) -> str:
    """The MIG table's key for the profile's GPU: ``NVIDIA H100-SXM5-80GB`` -> ``H100-80GB``."""
    parts = profile.gpu.removeprefix("NVIDIA ").split("-")
    return f"{parts[0]}-{parts[-1]}"


def slice_names(profile: LatencyProfile) -> list[str]:
    """The MIG profiles of the profile's GPU, smallest GPU share first."""
    table = profiles_for(mig_model(profile))
    return sorted(table, key=lambda n: (table[n].compute_slices, table[n].memory_slices))


def replica_size(profile: LatencyProfile, size: str) -> ReplicaSize:
    """``size`` (``gpu`` or a MIG profile name such as ``3g.40gb``) of ``profile``'s GPU."""
    if size == WHOLE_GPU:
        return ReplicaSize(WHOLE_GPU, profile, 1.0)
    table = profiles_for(mig_model(profile))
    if size not in table:
        raise ReplicaSizeError(
            f"replica size {size!r}: expected {WHOLE_GPU!r} or a MIG profile of "
            f"{profile.gpu}: {', '.join(slice_names(profile)) or '(none)'}"
        )
    mig = table[size]
    sliced = slice_profile(
        profile,
        slice_name=size,
        compute_fraction=mig.compute_slices / COMPUTE_SLICES,
        bandwidth_fraction=mig.memory_slices / MEMORY_SLICES,
        memory_gib=mig.memory_gib,
    )
    return ReplicaSize(size, sliced, mig.compute_slices / COMPUTE_SLICES)


def slo_feasible(profile: LatencyProfile, prompt_tokens: int, slo_ttft_s: float,
                 slo_tpot_s: float) -> list[ReplicaSize]:  # fmt: skip
    """The slices whose modelled capacity meets the SLO, smallest GPU share first, then the GPU.

    A slice qualifies if it holds the model, an idle replica prefills a ``prompt_tokens``
    prompt within the TTFT target, and its slowest decode step (``max_num_seqs`` sequences with
    the KV cache full) stays within the TPOT target. The whole GPU is always last.
    """
    feasible: list[ReplicaSize] = []
    for name in slice_names(profile):
        try:
            candidate = replica_size(profile, name)
        except ReplicaSizeError:
            continue
        sliced = candidate.profile
        batch = sliced.max_num_seqs
        context = min(sliced.kv_cache_tokens, batch * sliced.max_model_len)
        a_s, b_s = sliced.decode_step_coefficients(batch)
        if sliced.prefill_s(prompt_tokens) <= slo_ttft_s and a_s + b_s * context <= slo_tpot_s:
            feasible.append(candidate)
    return [*feasible, replica_size(profile, WHOLE_GPU)]


def smallest_fitting(profile: LatencyProfile, prompt_tokens: int, slo_ttft_s: float,
                     slo_tpot_s: float) -> ReplicaSize:  # fmt: skip
    """The smallest slice whose modelled capacity meets the SLO (see ``slo_feasible``)."""
    return slo_feasible(profile, prompt_tokens, slo_ttft_s, slo_tpot_s)[0]
