"""``kapell bench spot``: spot versus on-demand under a deadline, replayed on real availability.

Reads the single-node availability traces of Wu et al. (NSDI 2024; ``../shared/data/spot-traces``,
a value of 1 meaning spot was *not* available in that tick), starts the job every
``start_every_h`` hours of a trace while its whole deadline window fits, and reports per policy
the cost as a fraction of on-demand-only and the share of deadlines met. The omniscient optimum
is solved exactly on the same windows (``policy.spot.optimal``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kapell.api.errors import KapellError, NotFoundError
from kapell.bench.traces import TraceError, open_trace
from kapell.policy.spot.decide import POLICIES
from kapell.policy.spot.optimal import optimal_costs
from kapell.policy.spot.replay import SpotJob, replay

OPTIMAL = "optimal"


@dataclass(frozen=True)
class AvailabilityTrace:
    """Whether spot was up in each tick of ``tick_s`` seconds."""

    name: str
    tick_s: int
    spot_up: npt.NDArray[np.bool_]


def read_availability(path: Path, name: str | None = None) -> AvailabilityTrace:
    """One trace file: ``{"metadata": {"gap_seconds": G}, "data": [0 or 1, ...]}``."""
    with open_trace(path) as f:
        try:
            raw = json.load(f)
            tick = raw["metadata"]["gap_seconds"]
            data = raw["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TraceError(
                f"{path}: expected a JSON object with metadata.gap_seconds and data ({exc})"
            ) from None
    if not isinstance(tick, int) or tick <= 0:
        raise TraceError(f"{path}: metadata.gap_seconds: expected a positive whole number")
    if not isinstance(data, list):
        raise TraceError(f"{path}: data: expected a list of 0 (spot up) or 1 (spot down)")
    bad = next((i for i, v in enumerate(data) if v not in (0, 1)), None)
    if bad is not None:
        raise TraceError(f"{path}: data[{bad}]: expected 0 (spot up) or 1 (spot down)")
    return AvailabilityTrace(name or path.stem, tick, np.array(data, dtype=np.int8) == 0)


def trace_files(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """Each file as given, each folder as its ``*.json`` files below it (named relative to it)."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json"))
            if not files:
                raise NotFoundError(f"{path}: no *.json trace files in this folder")
            found += [(str(f.relative_to(path).with_suffix("")), f) for f in files]
        elif path.exists():
            found.append((path.stem, path))
        else:
            raise NotFoundError(f"{path}: trace file not found")
    return found


def windows(trace: AvailabilityTrace, job: SpotJob, start_every_h: float) -> npt.NDArray[np.bool_]:
    """The availability of every job window: one row per start, one column per tick."""
    ticks = -(-round(job.deadline_s) // trace.tick_s)
    stride = max(round(start_every_h * 3600 / trace.tick_s), 1)
    starts = range(0, len(trace.spot_up) - ticks + 1, stride)
    if not starts:
        hours = len(trace.spot_up) * trace.tick_s / 3600
        raise KapellError(
            f"{trace.name}: the trace covers {hours:.0f} h, shorter than the deadline"
        )
    return np.stack([trace.spot_up[s : s + ticks] for s in starts])


def bench_trace(
    trace: AvailabilityTrace,
    job: SpotJob,
    start_every_h: float,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """One trace's block: every policy (and the optimum) on the same start windows."""
    rows = windows(trace, job, start_every_h)
    baseline = job.on_demand_cost * len(rows)
    policies: dict[str, dict[str, float]] = {}
    for name, policy in POLICIES.items():
        outcomes = [replay(policy, job, row.tolist(), trace.tick_s) for row in rows]
        policies[name] = _summary(
            [o.cost for o in outcomes], [o.met_deadline for o in outcomes], baseline
        )
        tick()
    best = optimal_costs(job, rows, trace.tick_s)
    policies[OPTIMAL] = _summary(best.tolist(), np.isfinite(best).tolist(), baseline)
    tick()
    return {
        "tick_s": trace.tick_s,
        "spot_available_pct": round(100 * float(trace.spot_up.mean()), 1),
        "starts": len(rows),
        "policies": policies,
    }


def _summary(costs: list[float], met: list[bool], baseline: float) -> dict[str, float]:
    return {
        "cost_vs_on_demand": round(float(np.sum(costs)) / baseline, 4),
        "deadlines_met_pct": round(100 * float(np.mean(met)), 1),
    }


def run_spot_bench(
    paths: Sequence[Path],
    job: SpotJob,
    start_every_h: float,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """The benchmark's JSON: one ``policies`` block, or one per trace under ``traces``."""
    if job.work_s + job.restart_overhead_s > job.deadline_s:
        raise KapellError(
            "--deadline-hours: the deadline leaves no time for the job and one restart overhead"
        )
    files = trace_files(paths)
    total, done = len(files) * (len(POLICIES) + 1), 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done, total)

    blocks = {name: bench_trace(read_availability(f, name), job, start_every_h, tick)
              for name, f in files}  # fmt: skip
    head: dict[str, Any] = {
        "job_hours": job.work_s / 3600,
        "deadline_hours": job.deadline_s / 3600,
        "restart_overhead_min": job.restart_overhead_s / 60,
        "start_every_hours": start_every_h,
        "prices_per_hour": {"spot": job.spot_price_per_h, "on_demand": job.on_demand_price_per_h},
    }
    if len(blocks) == 1 and len(paths) == 1 and not paths[0].is_dir():
        return {**head, "trace": files[0][0], **next(iter(blocks.values()))}
    return {**head, "traces": blocks, "summary": summary(blocks)}


def summary(blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over traces, and how kapell compares with Uniform Progress and the optimum."""

    def cost(name: str, policy: str) -> float:
        return float(blocks[name]["policies"][policy]["cost_vs_on_demand"])

    names = list(blocks)
    policies = list(next(iter(blocks.values()))["policies"])
    return {
        "mean_cost_vs_on_demand": {
            p: round(float(np.mean([cost(n, p) for n in names])), 4) for p in policies
        },
        "min_deadlines_met_pct": {
            p: min(blocks[n]["policies"][p]["deadlines_met_pct"] for n in names) for p in policies
        },
        "kapell_vs_uniform_progress_max": round(
            max(cost(n, "kapell") / cost(n, "uniform_progress") for n in names), 4
        ),
        "kapell_vs_optimal_mean": round(
            float(np.mean([cost(n, "kapell") / cost(n, OPTIMAL) for n in names])), 4
        ),
        "uniform_progress_beats_greedy_on": sum(
            cost(n, "uniform_progress") < cost(n, "greedy") for n in names
        ),
        "traces": len(names),
    }
