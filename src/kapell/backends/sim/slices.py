"""Replica sizes for the twin: a whole GPU or one MIG slice of it.

The slice shapes come from ``kapell.policy.placement.mig`` (the table the placement policy
uses), and the latency model derives the slice's timings and KV cache from the whole-GPU
profile (``kapell.engines.sim.latency.slice_profile``). A slice is billed as its share of the
GPU's compute slices, g/7.
"""

from __future__ import annotations

from dataclasses import dataclass

from kapell.api.model import WHOLE_GPU, Model
from kapell.engines.sim.latency import (
    LatencyProfile,
    ReplicaSizeError,
    load_profile,
    slice_profile,
)
from kapell.policy.placement.mig import COMPUTE_SLICES, MEMORY_SLICES, MigProfile, profiles_for


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


def slice_args(model: Model) -> list[str]:
    """The ``sim`` engine's ``--slice`` argument for a Model whose replicas run on a MIG slice
    (none otherwise): the engine then times steps and sizes its KV cache as the slice would."""
    gpu = model.spec.resources.gpu
    if model.spec.engine.name != "sim" or gpu is None or gpu.mig_profile is None:
        return []
    profile = load_profile((model.spec.source.uri or "").removeprefix("file://"))
    mig = profiles_for(mig_model(profile)).get(gpu.mig_profile)
    if mig is None:
        raise ReplicaSizeError(
            f"model {model.metadata.name}: MIG profile {gpu.mig_profile} is not one of "
            f"{profile.gpu}'s: {', '.join(slice_names(profile)) or '(none)'}"
        )
    return ["--slice", ",".join([gpu.mig_profile, *(f"{v:g}" for v in _shape(mig))])]


def _shape(mig: MigProfile) -> tuple[float, float, float]:
    """A MIG profile's compute fraction, memory-bandwidth fraction and memory (GiB)."""
    return mig.compute_slices / COMPUTE_SLICES, mig.memory_slices / MEMORY_SLICES, mig.memory_gib


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
    compute, bandwidth, memory_gib = _shape(table[size])
    sliced = slice_profile(
        profile,
        slice_name=size,
        compute_fraction=compute,
        bandwidth_fraction=bandwidth,
        memory_gib=memory_gib,
    )
    return ReplicaSize(size, sliced, compute)


def size_name(model: Model) -> str:
    """The size one replica of ``model`` runs at: the MIG profile its ``resources.gpu`` names,
    else ``gpu`` (a whole GPU; the latency model has no time-sliced shares)."""
    gpu = model.spec.resources.gpu
    return (gpu.mig_profile if gpu is not None else None) or WHOLE_GPU


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
