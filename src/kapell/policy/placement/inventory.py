"""The cluster as the placement engine sees it: nodes, GPUs, and what is left on each.

State lives in numpy arrays indexed by node (and GPU slot), so a policy can score every
node at once. ``place`` and ``release`` are exact inverses; ``version`` counts changes per
node so policies may cache per-node derived values and refresh only what moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kapell.policy.placement.mig import MigGpu, MigSlice
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class NodeSpec:
    """A node's capacity. ``mig_gpus`` lists GPU indices that run in MIG mode."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_model: str = ""
    gpu_memory_mib: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    mig_gpus: tuple[int, ...] = ()
    mig_layouts: Mapping[int, tuple[MigSlice, ...]] = field(default_factory=dict)
    """Fixed MIG instances per GPU index, where the GPU cannot be repartitioned."""


@dataclass(frozen=True)
class Decision:
    """Where a request goes: node, exact GPU indices and, for MIG, the slice."""

    node_index: int
    node: str
    gpu_indices: tuple[int, ...] = ()
    mig_slice: MigSlice | None = None


class Inventory:
    """Capacity and free resources of every node, as arrays."""

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        self.nodes = list(nodes)
        n = len(self.nodes)
        self.max_gpus = max([s.gpu_count for s in self.nodes] + [1])
        self.models = sorted({s.gpu_model for s in self.nodes if s.gpu_model})
        model_id = {m: i for i, m in enumerate(self.models)}
        self.cpu_capacity = np.array([s.cpu_milli for s in self.nodes], dtype=np.int64)
        self.memory_capacity = np.array([s.memory_mib for s in self.nodes], dtype=np.int64)
        self.gpu_count = np.array([s.gpu_count for s in self.nodes], dtype=np.int64)
        self.gpu_model_id = np.array([model_id.get(s.gpu_model, -1) for s in self.nodes])
        self.gpu_memory_mib = np.array([s.gpu_memory_mib for s in self.nodes], dtype=np.int64)
        self.gpu_capacity = np.zeros((n, self.max_gpus), dtype=np.int64)
        self.mig: dict[tuple[int, int], MigGpu] = {}
        for i, spec in enumerate(self.nodes):
            self.gpu_capacity[i, : spec.gpu_count] = GPU_MILLI
            for g in spec.mig_gpus:
                self.gpu_capacity[i, g] = 0  # a MIG GPU is shared by slices, not milli
                self.mig[(i, g)] = MigGpu(spec.gpu_model, [], spec.mig_layouts.get(g, ()))
        self.cpu_left = self.cpu_capacity.copy()
        self.memory_left = self.memory_capacity.copy()
        self.gpu_left = self.gpu_capacity.copy()
        self.version = np.zeros(n, dtype=np.int64)
        self.index = {s.name: i for i, s in enumerate(self.nodes)}
        self._label_masks: dict[tuple[tuple[str, str], ...], BoolArray] = {}

    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_count.sum()) * GPU_MILLI

    @property
    def used_gpu_milli(self) -> int:
        """Allocated milli-GPU: shares and whole GPUs, plus MIG slices by compute fraction."""
        milli = int((self.gpu_capacity - self.gpu_left).sum())
        for gpu in self.mig.values():
            milli += gpu.compute_used * GPU_MILLI // 7
        return milli

    def label_mask(self, selector: tuple[tuple[str, str], ...]) -> BoolArray:
        """Nodes carrying every ``(key, value)`` of ``selector`` (every node when empty)."""
        mask = self._label_masks.get(selector)
        if mask is None:
            mask = np.array(
                [all(spec.labels.get(k) == v for k, v in selector) for spec in self.nodes],
                dtype=bool,
            )
            self._label_masks[selector] = mask
        return mask

    def model_mask(self, models: frozenset[str]) -> BoolArray:
        """Nodes whose GPU model is in ``models`` (every node when empty)."""
        if not models:
            return np.ones(len(self.nodes), dtype=bool)
        wanted = [i for i, m in enumerate(self.models) if m in models]
        return np.isin(self.gpu_model_id, wanted)

    def place(self, request: PodRequest, decision: Decision) -> None:
        """Take the request's resources on the decided node; raises if they are not free."""
        i = decision.node_index
        if self.cpu_left[i] < request.cpu_milli or self.memory_left[i] < request.memory_mib:
            raise ValueError(f"{request.name}: CPU or memory over-commit on {decision.node}")
        if request.is_mig:
            gpu = self.mig[(i, decision.gpu_indices[0])]
            if decision.mig_slice is None or not gpu.fits(decision.mig_slice):
                raise ValueError(f"{request.name}: MIG slice not free on {decision.node}")
            gpu.used.append(decision.mig_slice)
        else:
            if len(decision.gpu_indices) != request.gpu_count:
                raise ValueError(f"{request.name}: wrong number of GPUs in decision")
            for g in decision.gpu_indices:
                if self.gpu_left[i, g] < request.gpu_milli:
                    raise ValueError(f"{request.name}: GPU {g} over-commit on {decision.node}")
            for g in decision.gpu_indices:
                self.gpu_left[i, g] -= request.gpu_milli
        self.cpu_left[i] -= request.cpu_milli
        self.memory_left[i] -= request.memory_mib
        self.version[i] += 1

    def release(self, request: PodRequest, decision: Decision) -> None:
        """Return exactly what ``place`` took."""
        i = decision.node_index
        if request.is_mig:
            assert decision.mig_slice is not None
            self.mig[(i, decision.gpu_indices[0])].release(decision.mig_slice)
        else:
            for g in decision.gpu_indices:
                self.gpu_left[i, g] += request.gpu_milli
        self.cpu_left[i] += request.cpu_milli
        self.memory_left[i] += request.memory_mib
        self.version[i] += 1
