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
    cpu_ratio=st.one_of(st.just(0.0), st.floats(0.01, 50)),
    mem_ratio=st.one_of(st.just(0.0), st.floats(0.01, 200)),
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


def _workload() -> list[PodRequest]:
    return [PodRequest(f"w{i}", 8000, 0, 1, GPU_MILLI) for i in range(10)]


@pytest.mark.parametrize("seed", range(6))
def test_kapell_does_not_strand_gpus_that_fgd_cannot_see(seed: int) -> None:
    hungry = PodRequest("hungry", 16_000, 0, 1, GPU_MILLI)  # 16 cores for one GPU
    inv = _two_nodes()
    _, _, fgd_growth = FgdPolicy(_workload()).candidates(inv, hungry)
    assert fgd_growth[0] == fgd_growth[1]  # FGD sees no difference one pod ahead
    decision = KapellPolicy(_workload()).select(inv, hungry, np.random.default_rng(seed))
    assert decision is not None and decision.node == "rich"


@pytest.mark.parametrize("seed", range(6))
def test_unstranding_earns_no_credit(seed: int) -> None:
    light = PodRequest("light", 1000, 0, 1, GPU_MILLI)  # lowers "poor"'s stranded milli
    inv = _two_nodes()
    fgd = FgdPolicy(_workload()).select(inv, light, np.random.default_rng(seed))
    kapell = KapellPolicy(_workload()).select(inv, light, np.random.default_rng(seed))
    assert kapell == fgd
