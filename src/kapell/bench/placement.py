"""The FGD paper's placement benchmark on the Alibaba GPU trace (cluster-trace-gpu-v2023).

Protocol (Weng et al., USENIX ATC '23, section 6.1, and the authors' simulator): the pod
list, sorted by name, is shuffled by the seed; pods re-sampled at random from the list are
appended until their GPU demand would pass ``inflation`` times the cluster's GPUs; pods
arrive one by one and never leave; a pod that fits nowhere stays out. After every arrival
the benchmark records arrived GPU demand and allocated GPU milli. The value at k% is the
mean allocation ratio over the arrivals whose arrived demand rounds to k% (the authors'
``analysis_allo_discrete``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kapell.api.errors import NotFoundError, Problem, SpecError
from kapell.policy.placement.inventory import Inventory, NodeSpec
from kapell.policy.placement.policies import make_policy
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

DEFAULT_INFLATION = 1.3
REPORT_POINTS = (100, 130)


def _rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such trace file")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            problem = Problem(str(path), 1, "header", f"missing column(s): {', '.join(missing)}")
            raise SpecError([problem])
        return list(reader)


def read_nodes(path: Path) -> list[NodeSpec]:
    """Nodes of an ``openb_node_list_*.csv`` (``sn,cpu_milli,memory_mib,gpu,model``)."""
    return [
        NodeSpec(
            name=r["sn"],
            cpu_milli=int(r["cpu_milli"]),
            memory_mib=int(r["memory_mib"]),
            gpu_count=int(r["gpu"]),
            gpu_model=r["model"],
        )
        for r in _rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model"))
    ]


def read_pods(path: Path) -> list[PodRequest]:
    """Pods of an ``openb_pod_list_*.csv``; ``gpu_spec`` and ``qos`` are optional columns."""
    pods = []
    for line, r in enumerate(
        _rows(path, ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")), 2
    ):
        try:
            count, milli = int(r["num_gpu"]), int(r["gpu_milli"])
            spec = r.get("gpu_spec") or ""
            pods.append(
                PodRequest(
                    name=r["name"],
                    cpu_milli=int(r["cpu_milli"]),
                    memory_mib=int(r["memory_mib"]),
                    gpu_count=count if milli else 0,
                    gpu_milli=milli if count else 0,
                    gpu_models=frozenset(m for m in spec.split("|") if m),
                )
            )
        except ValueError as exc:
            raise SpecError([Problem(str(path), line, "row", str(exc))]) from exc
    return sorted(pods, key=lambda p: p.name)


def arrival_order(
    pods: Sequence[PodRequest], capacity_milli: int, seed: int, inflation: float
) -> list[PodRequest]:
    """The shuffled pod list topped up with re-sampled pods, as the FGD simulator builds it."""
    rng = np.random.default_rng(seed)
    order = [pods[i] for i in rng.permutation(len(pods))]
    demand = sum(p.total_gpu_milli for p in pods)
    target = inflation * capacity_milli
    while True:
        extra = pods[int(rng.integers(len(pods)))]
        if demand + extra.gpu_milli > target:  # the simulator compares per-GPU milli here
            break
        demand += extra.total_gpu_milli
        order.append(extra)
    return order


@dataclass
class RunResult:
    """One policy on one seed: the raw curve and per-decision CPU time."""

    seed: int
    arrived_milli: list[int] = field(default_factory=list)
    used_milli: list[int] = field(default_factory=list)
    decision_s: list[float] = field(default_factory=list)
    failed: int = 0


def run_once(
    nodes: Sequence[NodeSpec],
    pods: Sequence[PodRequest],
    policy_name: str,
    seed: int,
    inflation: float = DEFAULT_INFLATION,
    tick: Callable[[], None] | None = None,
) -> RunResult:
    inv = Inventory(nodes)
    policy = make_policy(policy_name, pods)
    rng = np.random.default_rng(seed + 1_000_003)
    result = RunResult(seed)
    arrived = used = 0
    for pod in arrival_order(pods, inv.total_gpu_milli, seed, inflation):
        arrived += pod.total_gpu_milli
        start = time.thread_time()  # CPU time: the machine is shared, wall time is noise
        decision = policy.select(inv, pod, rng)
        result.decision_s.append(time.thread_time() - start)
        if decision is None:
            result.failed += 1
        else:
            inv.place(pod, decision)
            used += pod.total_gpu_milli
        result.arrived_milli.append(arrived)
        result.used_milli.append(used)
        if tick is not None:
            tick()
    return result


def discrete_curve(result: RunResult, total_milli: int, last: int = 130) -> dict[int, float]:
    """Allocation ratio (%) at each arrived-demand percentage 0..``last``."""
    arrived = np.round(np.array(result.arrived_milli) * 100.0 / total_milli)
    alloc = np.round(np.array(result.used_milli) * 100.0 / total_milli, 2)
    curve = {}
    for k in range(last + 1):
        sel = alloc[arrived == k]
        if sel.size == 0:
            sel = alloc[(arrived >= k - 1) & (arrived <= k + 1)]
        if sel.size:
            curve[k] = round(float(sel.mean()), 2)
    return curve


def summarize(
    results: Sequence[RunResult], total_milli: int
) -> tuple[dict[str, object], dict[int, float]]:
    """The JSON block of one policy (mean ratios at the report points, per seed, latency)
    and its mean allocation curve for plotting."""
    curves = [discrete_curve(r, total_milli) for r in results]
    per_seed = [
        {
            "seed": r.seed,
            "alloc_ratio": {str(k): c.get(k) for k in REPORT_POINTS},
            "failed_pods": r.failed,
            "pods": len(r.arrived_milli),
        }
        for r, c in zip(results, curves, strict=True)
    ]
    latency_ms = np.array([s for r in results for s in r.decision_s]) * 1000.0
    mean_curve = {k: round(float(np.mean([c[k] for c in curves if k in c])), 2) for k in curves[0]}
    block: dict[str, object] = {
        "alloc_ratio": {str(k): mean_curve.get(k) for k in REPORT_POINTS},
        "per_seed": per_seed,
        "decision_ms": {
            "p50": round(float(np.percentile(latency_ms, 50)), 4),
            "p99": round(float(np.percentile(latency_ms, 99)), 4),
        },
    }
    return block, mean_curve


def paired_with(
    blocks: dict[str, dict[str, object]], baseline: str = "fgd"
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per policy, its per-seed allocation minus the baseline's on the same seed.

    Seeds share the arrival order, so the paired difference is far less noisy than the
    difference of means; ``positive`` counts the seeds where the policy did better.
    """
    if baseline not in blocks:
        return {}

    def by_seed(block: dict[str, object]) -> dict[int, dict[str, float | None]]:
        rows = block["per_seed"]
        assert isinstance(rows, list)
        return {row["seed"]: row["alloc_ratio"] for row in rows}

    base = by_seed(blocks[baseline])
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for name, block in blocks.items():
        if name == baseline:
            continue
        mine = by_seed(block)
        out[name] = {}
        for k in map(str, REPORT_POINTS):
            diffs = [
                float(mine[s][k]) - float(base[s][k])  # type: ignore[arg-type]
                for s in sorted(set(mine) & set(base))
                if mine[s][k] is not None and base[s][k] is not None
            ]
            if diffs:
                out[name][k] = {
                    "mean": round(float(np.mean(diffs)), 3),
                    "min": round(min(diffs), 3),
                    "max": round(max(diffs), 3),
                    "positive": sum(d > 0 for d in diffs),
                    "seeds": len(diffs),
                }
    return out


def total_gpu_milli(nodes: Sequence[NodeSpec]) -> int:
    return sum(n.gpu_count for n in nodes) * GPU_MILLI


VARIANTS = ("share-heavy", "gpu-model", "multi-gpu", "cpu-heavy")


def make_variant(
    pods: Sequence[PodRequest], nodes: Sequence[NodeSpec], kind: str, seed: int = 0
) -> list[PodRequest]:
    """A stress variant of a pod list, in the spirit of the FGD paper's trace variants.

    ``share-heavy``: share pods re-sampled in until they are 60% of GPU demand;
    ``multi-gpu``: multi-GPU pods re-sampled in until they are 40% of GPU demand;
    ``cpu-heavy``: the CPU-only pods doubled; ``gpu-model``: a third of GPU pods pinned to
    one GPU model, drawn in proportion to each model's GPUs in the cluster.
    """
    rng = np.random.default_rng(seed)
    out = list(pods)

    def top_up(group: list[PodRequest], share: float) -> None:
        demand = sum(p.total_gpu_milli for p in out)
        part = sum(p.total_gpu_milli for p in group)
        i = 0
        while group and part < share * demand:
            pick = group[int(rng.integers(len(group)))]
            out.append(replace(pick, name=f"{pick.name}-v{i}"))
            part += pick.total_gpu_milli
            demand += pick.total_gpu_milli
            i += 1

    if kind == "share-heavy":
        top_up([p for p in pods if p.is_share], 0.6)
    elif kind == "multi-gpu":
        top_up([p for p in pods if p.gpu_count > 1], 0.4)
    elif kind == "cpu-heavy":
        cpu = [p for p in pods if p.gpu_count == 0]
        out += [replace(p, name=f"{p.name}-v") for p in cpu]
    elif kind == "gpu-model":
        models = sorted({n.gpu_model for n in nodes if n.gpu_model})
        gpus = np.array(
            [sum(n.gpu_count for n in nodes if n.gpu_model == m) for m in models], dtype=float
        )
        for i, p in enumerate(out):
            if p.gpu_count and rng.random() < 1 / 3:
                model = models[int(rng.choice(len(models), p=gpus / gpus.sum()))]
                out[i] = replace(p, gpu_models=frozenset({model}))
    else:
        raise ValueError(f"unknown variant {kind!r}; expected one of {', '.join(VARIANTS)}")
    return sorted(out, key=lambda p: p.name)
