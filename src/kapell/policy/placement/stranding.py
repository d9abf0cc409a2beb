"""GPU capacity a node's CPU and memory can no longer feed ("stranded" GPU milli).

FGD's fragmentation looks one pod ahead: a node's CPU counts only once it drops below what
the next pod needs. Over the lifetime of a node, though, every GPU pod brings CPU and
memory along, on average ``rho_cpu`` CPU milli and ``rho_mem`` MiB per GPU milli (the
GPU pods of the workload, demand-weighted). Free GPU milli beyond what the node's free CPU
and memory can feed at that rate will, in expectation, never be allocated:

    stranded(node) = max(0, free_gpu_milli - min(cpu_left / rho_cpu, memory_left / rho_mem))

A CPU-poor node (few cores per GPU) therefore prefers CPU-light GPU pods, and CPU-hungry
pods (or CPU-only pods) go where CPU is plentiful relative to GPUs. The measure is in GPU
milli, the unit of FGD's fragmentation, so the two add up to one expected loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kapell.policy.placement.requests import PodRequest

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FeedRatios:
    """CPU milli and memory MiB that GPU pods bring per GPU milli, demand-weighted."""

    cpu_per_gpu_milli: float
    memory_mib_per_gpu_milli: float

    @classmethod
    def of(cls, workload: Iterable[PodRequest]) -> FeedRatios | None:
        """The ratios of the GPU pods in ``workload``; ``None`` without GPU demand."""
        gpu = cpu = memory = 0
        for req in workload:
            if req.total_gpu_milli > 0:
                gpu += req.total_gpu_milli
                cpu += req.cpu_milli
                memory += req.memory_mib
        if gpu == 0:
            return None
        return cls(cpu / gpu, memory / gpu)

    def stranded(self, gpu_free: IntArray, cpu_left: IntArray, memory_left: IntArray) -> FloatArray:
        """GPU milli per node that the node's CPU and memory left can no longer feed."""
        fed = np.full(gpu_free.shape, np.inf)
        if self.cpu_per_gpu_milli > 0:
            fed = np.minimum(fed, cpu_left / self.cpu_per_gpu_milli)
        if self.memory_mib_per_gpu_milli > 0:
            fed = np.minimum(fed, memory_left / self.memory_mib_per_gpu_milli)
        out: FloatArray = np.maximum(0.0, gpu_free - fed)
        return out

    def growth(
        self,
        gpu_free: IntArray,
        cpu_left: IntArray,
        memory_left: IntArray,
        req: PodRequest,
    ) -> FloatArray:
        """How much the stranded milli of each node grows if ``req`` lands there."""
        after = self.stranded(
            gpu_free - req.total_gpu_milli,
            cpu_left - req.cpu_milli,
            memory_left - req.memory_mib,
        )
        out: FloatArray = after - self.stranded(gpu_free, cpu_left, memory_left)
        return out
