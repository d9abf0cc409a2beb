"""GPU fragmentation as defined by FGD (Weng et al., USENIX ATC '23, section 4).

A node's fragmentation, for a workload of "typical" pod shapes with popularity ``f_k``, is
the expected amount of its free GPU milli that the next pod could not use:

    frag(node) = sum_k f_k * (free milli on GPUs too small for k   if k fits the node,
                              all free milli                        otherwise)

CPU-only shapes count all free GPU milli (they can never use it). Writing ``A_k`` for the
free milli on GPUs with at least ``m_k`` left and ``S`` for all free milli, this is
``S * sum(f) - sum_k f_k * fits_k * A_k``. ``FragmentationModel`` keeps, per node and
shape, the count of GPUs that have room for the shape and ``A_k``, so a candidate
placement's fragmentation is a few array operations on the changed GPU only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kapell.policy.placement.inventory import Inventory
from kapell.policy.placement.requests import PodRequest

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PodShape:
    """A request's shape as fragmentation sees it (memory is not part of it, as in FGD)."""

    cpu_milli: int
    gpu_milli: int
    gpu_count: int
    gpu_models: frozenset[str]


def shape_of(req: PodRequest) -> PodShape:
    return PodShape(req.cpu_milli, req.gpu_milli, req.gpu_count, req.gpu_models)


def typical_shapes(
    requests: Iterable[PodRequest], coverage: float = 0.95, by_gpu_demand: bool = False
) -> list[tuple[PodShape, float]]:
    """The most popular shapes that together make up ``coverage`` of the pods, renormalised.

    With ``by_gpu_demand`` a shape's weight is its pods' GPU demand rather than their
    count: the weight of a shape then says how much allocation is lost when it cannot be
    placed. Ties in popularity go to the larger shape first, so the cut is deterministic.
    """
    counts: Counter[PodShape] = Counter()
    for r in requests:
        counts[shape_of(r)] += r.total_gpu_milli if by_gpu_demand else 1
    counts = Counter({s: c for s, c in counts.items() if c > 0})
    total = sum(counts.values())
    ranked = sorted(
        counts.items(),
        key=lambda kv: (kv[1], kv[0].cpu_milli, kv[0].gpu_milli, kv[0].gpu_count),
        reverse=True,
    )
    chosen: list[tuple[PodShape, int]] = []
    cumulative = 0
    for shape, count in ranked:
        if cumulative >= coverage * total:
            break
        chosen.append((shape, count))
        cumulative += count
    return [(shape, count / cumulative) for shape, count in chosen]


class FragmentationModel:
    """Per-node fragmentation and the fragmentation after candidate placements."""

    def __init__(self, inv: Inventory, shapes: list[tuple[PodShape, float]]) -> None:
        self.inv = inv
        self.milli = np.array([s.gpu_milli for s, _ in shapes], dtype=np.int64)
        self.count = np.array([s.gpu_count for s, _ in shapes], dtype=np.int64)
        self.cpu = np.array([s.cpu_milli for s, _ in shapes], dtype=np.int64)
        self.freq = np.array([f for _, f in shapes], dtype=np.float64)
        self.is_gpu = self.milli > 0
        # accessible[n, k]: node n's GPU model is acceptable to shape k
        access = np.ones((len(inv.nodes), len(shapes)), dtype=bool)
        for k, (shape, _) in enumerate(shapes):
            if shape.gpu_models:
                access[:, k] = inv.model_mask(shape.gpu_models)
        self.weight = np.where(access & self.is_gpu, self.freq, 0.0)  # (N, K)
        self.freq_total = float(self.freq.sum())
        n = len(inv.nodes)
        self.fit_gpus = np.zeros((n, len(shapes)), dtype=np.int64)
        self.room = np.zeros((n, len(shapes)), dtype=np.int64)
        self.frag = np.zeros(n, dtype=np.float64)
        self.seen = np.full(n, -1, dtype=np.int64)
        # nodes in the same state (model, CPU left, multiset of GPU left) score alike
        self.state_id = np.zeros(n, dtype=np.int64)
        self._states: dict[tuple[int, int, tuple[int, ...]], int] = {}
        self.refresh()

    def refresh(self) -> None:
        """Recompute the cached rows of nodes that changed since the last call."""
        changed = np.flatnonzero(self.seen != self.inv.version)
        if changed.size == 0:
            return
        left = self.inv.gpu_left[changed]  # (C, G)
        big = left[:, :, None] >= self.milli[None, None, :]  # (C, G, K)
        self.fit_gpus[changed] = big.sum(axis=1)
        self.room[changed] = (left[:, :, None] * big).sum(axis=1)
        self.frag[changed] = self.fragmentation(
            changed,
            left.sum(axis=1),
            self.inv.cpu_left[changed],
            self.fit_gpus[changed],
            self.room[changed],
        )
        self.seen[changed] = self.inv.version[changed]
        for i in changed.tolist():
            key = (
                int(self.inv.gpu_model_id[i]),
                int(self.inv.cpu_left[i]),
                tuple(sorted(self.inv.gpu_left[i].tolist())),
            )
            self.state_id[i] = self._states.setdefault(key, len(self._states))

    def fragmentation(
        self,
        nodes: npt.NDArray[np.int64],
        free_milli: npt.NDArray[np.int64],
        cpu_left: npt.NDArray[np.int64],
        fit_gpus: npt.NDArray[np.int64],
        room: npt.NDArray[np.int64],
    ) -> FloatArray:
        """Fragmentation of node states given per-shape GPU counts and room (rows align)."""
        fits = (fit_gpus >= self.count) & (cpu_left[:, None] >= self.cpu)
        usable: FloatArray = (self.weight[nodes] * fits * room).sum(axis=1)
        return free_milli * self.freq_total - usable

    def after_share(
        self, nodes: npt.NDArray[np.int64], gpus: npt.NDArray[np.int64], req: PodRequest
    ) -> FloatArray:
        """Fragmentation of each node after ``req`` takes ``req.gpu_milli`` on GPU ``gpus``."""
        before = self.inv.gpu_left[nodes, gpus][:, None]
        after = before - req.gpu_milli
        was = before >= self.milli
        now = after >= self.milli
        fit_gpus = self.fit_gpus[nodes] - was + now
        room = self.room[nodes] - before * was + after * now
        free = self.inv.gpu_left[nodes].sum(axis=1) - req.gpu_milli
        return self.fragmentation(
            nodes, free, self.inv.cpu_left[nodes] - req.cpu_milli, fit_gpus, room
        )

    def after_whole(self, nodes: npt.NDArray[np.int64], req: PodRequest) -> FloatArray:
        """Fragmentation after ``req`` takes whole free GPUs (or only CPU) on each node."""
        taken = req.gpu_count * req.gpu_milli
        gpu_shape = self.is_gpu[None, :]
        fit_gpus = self.fit_gpus[nodes] - req.gpu_count * gpu_shape
        room = self.room[nodes] - taken * gpu_shape
        free = self.inv.gpu_left[nodes].sum(axis=1) - taken
        return self.fragmentation(
            nodes, free, self.inv.cpu_left[nodes] - req.cpu_milli, fit_gpus, room
        )
