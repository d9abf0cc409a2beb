"""What a pod asks of the cluster, in the units the placement engine counts.

A request is whole GPUs (``gpu_count`` >= 1, ``gpu_milli`` == 1000), a share of one GPU
(``gpu_count`` == 1, ``gpu_milli`` < 1000, time-slicing or MPS), a MIG slice (``mig_profile``),
or no GPU at all. GPU memory and GPU models narrow the devices that qualify.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GPU_MILLI = 1000
"""Milli-GPU in one whole GPU."""


@dataclass(frozen=True, slots=True)
class PodRequest:
    """One pod's request. ``gpu_milli`` is per GPU; a pod's GPU demand is their product."""

    name: str
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    gpu_models: frozenset[str] = field(default_factory=frozenset)
    min_gpu_memory_mib: int = 0
    mig_profile: str | None = None
    priority: int = 0
    sharing: str = "time-slicing"
    node_selector: tuple[tuple[str, str], ...] = ()
    """Labels a node must carry (Kubernetes ``nodeSelector`` semantics: all must match)."""

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0 or self.gpu_count < 0:
            raise ValueError(f"{self.name}: negative request")
        if self.mig_profile is not None:
            if self.gpu_count != 1 or self.gpu_milli != 0:
                raise ValueError(f"{self.name}: a MIG request takes gpu_count=1, gpu_milli=0")
            return
        if self.gpu_count == 0 and self.gpu_milli != 0:
            raise ValueError(f"{self.name}: gpu_milli without gpu_count")
        if self.gpu_count > 0 and not 0 < self.gpu_milli <= GPU_MILLI:
            raise ValueError(f"{self.name}: gpu_milli must be in (0, {GPU_MILLI}]")
        if self.gpu_count > 1 and self.gpu_milli != GPU_MILLI:
            raise ValueError(f"{self.name}: only single-GPU requests may share a GPU")
        if self.sharing not in ("time-slicing", "mps"):
            raise ValueError(f"{self.name}: sharing must be time-slicing or mps")

    @property
    def is_share(self) -> bool:
        """A fraction of one GPU, shared with other pods."""
        return self.mig_profile is None and self.gpu_count == 1 and self.gpu_milli < GPU_MILLI

    @property
    def is_mig(self) -> bool:
        return self.mig_profile is not None

    @property
    def total_gpu_milli(self) -> int:
        """GPU demand in milli-GPU (a MIG slice counts as its compute fraction elsewhere)."""
        return self.gpu_count * self.gpu_milli
