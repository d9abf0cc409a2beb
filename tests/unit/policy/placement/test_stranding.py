"""Stranded GPU milli (free GPU the node's CPU and memory cannot feed) and kapell's use of it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapell.policy.placement.inventory import Inventory, NodeSpec
from kapell.policy.placement.policies import FgdPolicy, KapellPolicy
from kapell.policy.placement.requests import GPU_MILLI, PodRequest
from kapell.policy.placement.stranding import FeedRatios


def test_ratios_are_demand_weighted_over_gpu_pods_only() -> None:
    pods = [
        PodRequest("a", 8000, 4096, 2, GPU_MILLI),
        PodRequest("b", 4000, 0, 1, 500),
        PodRequest("cpu-only", 64_000, 65_536),
    ]
    ratios = FeedRatios.of(pods)
    assert ratios == FeedRatios(12_000 / 2500, 4096 / 2500)
    assert FeedRatios.of([PodRequest("cpu-only", 1000)]) is None


@given(
    gpu=st.integers(0, 8000),
    cpu=st.integers(0, 128_000),
    mem=st.integers(0, 1 << 20),
    extra_cpu=st.integers(0, 64_000),
    cpu_ratio=st.floats(0, 50),
    mem_ratio=st.floats(0, 200),
)
def test_stranded_is_the_free_gpu_beyond_what_cpu_and_memory_feed(
    gpu: int, cpu: int, mem: int, extra_cpu: int, cpu_ratio: float, mem_ratio: float
) -> None:
    ratios = FeedRatios(cpu_ratio, mem_ratio)
    as_array = [np.array([v], dtype=np.int64) for v in (gpu, cpu, mem)]
    stranded = float(ratios.stranded(*as_array)[0])
    fed = min(
        cpu / cpu_ratio if cpu_ratio else float("inf"),
        mem / mem_ratio if mem_ratio else float("inf"),
    )
    assert stranded == pytest.approx(max(0.0, gpu - fed))
    assert 0.0 <= stranded <= gpu
    more_cpu = ratios.stranded(as_array[0], as_array[1] + extra_cpu, as_array[2])
    assert float(more_cpu[0]) <= stranded  # more CPU never strands more GPU


def _two_nodes() -> Inventory:
    # same GPUs; "poor" has 6 CPU cores per GPU, "rich" 24, against 8 per GPU in the workload
    return Inventory(
        [
            NodeSpec("poor", 24_000, 1 << 20, 4, "T4"),
            NodeSpec("rich", 96_000, 1 << 20, 4, "T4"),
        ]
    )


@pytest.mark.parametrize(("cpu_milli", "expected"), [(16_000, "rich"), (1000, "poor")])
@pytest.mark.parametrize("seed", range(6))
def test_kapell_keeps_cpu_poor_nodes_for_cpu_light_gpu_pods(
    cpu_milli: int, expected: str, seed: int
) -> None:
    workload = [PodRequest(f"w{i}", 8000, 0, 1, GPU_MILLI) for i in range(10)]
    pod = PodRequest("p", cpu_milli, 0, 1, GPU_MILLI)
    inv = _two_nodes()
    fgd = FgdPolicy(workload)
    _, _, fgd_growth = fgd.candidates(inv, pod)
    assert fgd_growth[0] == fgd_growth[1]  # FGD sees no difference one pod ahead
    decision = KapellPolicy(workload).select(inv, pod, np.random.default_rng(seed))
    assert decision is not None and decision.node == expected
