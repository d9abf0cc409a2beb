"""The FGD benchmark protocol pieces: trace readers, arrival order, the discrete curve."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapell.api.errors import NotFoundError, SpecError
from kapell.bench.placement import RunResult, arrival_order, discrete_curve, read_nodes, read_pods
from kapell.policy.placement.requests import PodRequest

TRACE = Path(__file__).resolve().parents[4] / "../shared/data/alibaba-gpu-v2023"
needs_trace = pytest.mark.skipif(not TRACE.is_dir(), reason="openb trace not present")


@needs_trace
def test_openb_files_read_as_published() -> None:
    nodes = read_nodes(TRACE / "openb_node_list_gpu_node.csv")
    assert len(nodes) == 1213 and sum(n.gpu_count for n in nodes) == 6212
    pods = read_pods(TRACE / "openb_pod_list_default.csv")
    assert len(pods) == 8152
    assert sum(p.is_share for p in pods) == 3078
    assert sum(p.gpu_count == 0 for p in pods) == 1088


def test_arrival_order_tops_up_to_the_target_and_depends_on_seed() -> None:
    pods = [PodRequest(f"p{i}", 100, 0, 1, 250 * (1 + i % 4)) for i in range(40)]
    capacity = 20_000
    order = arrival_order(pods, capacity, seed=42, inflation=1.3)
    demand = sum(p.total_gpu_milli for p in order)
    assert 1.3 * capacity - 1000 < demand <= 1.3 * capacity
    assert sorted(p.name for p in order[:40]) == sorted(p.name for p in pods)
    assert [p.name for p in order] != [p.name for p in arrival_order(pods, capacity, 43, 1.3)]
    assert [p.name for p in order] == [p.name for p in arrival_order(pods, capacity, 42, 1.3)]


def test_discrete_curve_averages_events_at_each_percent() -> None:
    result = RunResult(
        seed=0, arrived_milli=[0, 500, 1000, 1000, 2000], used_milli=[0, 500, 1000, 900, 1500]
    )
    curve = discrete_curve(result, total_milli=2000, last=100)
    assert curve[0] == 0.0
    assert curve[50] == pytest.approx((50.0 + 45.0) / 2)
    assert curve[100] == 75.0
    assert 30 not in curve  # no event within a point of 30%


def test_readers_report_missing_files_and_columns(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_nodes(tmp_path / "nope.csv")
    bad = tmp_path / "nodes.csv"
    bad.write_text("sn,cpu_milli\nx,1000\n")
    with pytest.raises(SpecError, match="missing column"):
        read_nodes(bad)


def test_variants_shift_the_mix_they_name() -> None:
    from kapell.bench.placement import make_variant
    from kapell.policy.placement.inventory import NodeSpec

    nodes = [NodeSpec("a", 64_000, 1 << 18, 8, "T4"), NodeSpec("b", 64_000, 1 << 18, 2, "P100")]
    pods = [PodRequest(f"s{i}", 1000, 0, 1, 300) for i in range(5)]
    pods += [PodRequest(f"w{i}", 1000, 0, 1, 1000) for i in range(20)]
    pods += [PodRequest("m", 1000, 0, 4, 1000), PodRequest("c", 1000)]

    def share(ps: list[PodRequest], test: str) -> float:
        demand = sum(p.total_gpu_milli for p in ps)
        part = {"share": sum(p.total_gpu_milli for p in ps if p.is_share)}
        part["multi"] = sum(p.total_gpu_milli for p in ps if p.gpu_count > 1)
        return part[test] / demand

    assert share(make_variant(pods, nodes, "share-heavy"), "share") >= 0.6 > share(pods, "share")
    assert share(make_variant(pods, nodes, "multi-gpu"), "multi") >= 0.4 > share(pods, "multi")
    assert sum(p.gpu_count == 0 for p in make_variant(pods, nodes, "cpu-heavy")) == 2
    pinned = [p for p in make_variant(pods, nodes, "gpu-model", seed=1) if p.gpu_models]
    assert pinned and all(p.gpu_models <= {"T4", "P100"} and p.gpu_count for p in pinned)


def test_paired_differences_match_seed_by_seed() -> None:
    from kapell.bench.placement import paired_with

    def block(values: dict[int, tuple[float, float]]) -> dict[str, object]:
        rows = [{"seed": s, "alloc_ratio": {"100": a, "130": b}} for s, (a, b) in values.items()]
        return {"per_seed": rows}

    blocks = {
        "fgd": block({42: (95.0, 95.5), 43: (94.0, 94.2)}),
        "kapell": block({43: (94.5, 94.1), 42: (95.25, 95.5)}),
    }
    paired = paired_with(blocks, "fgd")
    assert set(paired) == {"kapell"}
    assert paired["kapell"]["100"] == {
        "mean": 0.375,
        "min": 0.25,
        "max": 0.5,
        "positive": 2,
        "seeds": 2,
    }
    assert paired["kapell"]["130"]["positive"] == 0  # one tie, one loss
    assert paired_with({"kapell": blocks["kapell"]}, "fgd") == {}
