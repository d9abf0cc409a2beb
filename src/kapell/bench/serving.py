"""``kapell sim serve``: replay a trace through the twin per autoscaler, summarise, sweep, plot.

Every autoscaler sees the same trace, router, latency profile and seed, in one run, so the
GPU-hour ratios it prints compare like with like. ``--sweep`` moves each policy's main knob
from frugal to generous and keeps the cheapest setting that meets the SLO for 99% of requests
(``gpu_hours_at_99``). More generous settings cost more GPU-hours, so a policy's sweep stops
one setting after its first success (the extra one guards against a non-monotone policy).

An autoscaler may be named with a replica size: ``kapell@3g.40gb`` (a MIG slice, billed g/7 of
a GPU), ``kapell@gpu`` (whole GPUs) or ``kapell@auto`` (a ``gpu: auto`` Model: the sizing
policy of ``kapell up`` picks the size from the demand it meters, and re-picks when the demand
moves for long enough, see ``control.sizing``). A bare name takes
its policy's default size: ``auto`` for kapell, which sizes replicas as it deploys them, and a
whole GPU for the peers, as KServe/Knative deployments request ``nvidia.com/gpu: 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, get_args

import numpy as np

from kapell.api import ObjectMeta
from kapell.api.errors import KapellError
from kapell.api.model import WHOLE_GPU, Model, ModelSpec, RoutingStrategy
from kapell.backends.sim.sizing import peak_tokens_per_s
from kapell.backends.sim.slices import replica_size
from kapell.backends.sim.twin import SimSettings
from kapell.bench.traces import Trace
from kapell.bench.twin_replay import TroughTwin, Twin, TwinConfig, TwinRun
from kapell.engines.sim.latency import load_profile
from kapell.policy.autoscale import Tune

AUTOSCALERS = ("kapell", "kpa", "static")
POLICIES = {"kapell": "tokens", "kpa": "concurrency", "static": "static"}
"""The ``spec.scaling.autoscaler`` each benchmark name runs."""
ROUTERS: tuple[str, ...] = get_args(RoutingStrategy)
ATTAINMENT_GOAL = 0.99
# Knob grids, frugal first, both dynamic policies in steps of 2^(1/4) (19%). kapell: tokens/s
# one replica is asked to carry; KPA: requests in flight per replica; static: replicas.
SWEEPS: dict[str, tuple[float, ...]] = {
    "kapell": tuple(round(250 * 2 ** (i / 4)) for i in reversed(range(31))),  # 45,255 .. 250
    "kpa": tuple(round(128 * 2 ** (-i / 4), 2) for i in range(29)),  # 128 .. 1
    "static": tuple(range(1, 65)),
}
KNOB_NAMES = {"kapell": "target_tokens_per_s", "kpa": "target_concurrency", "static": "replicas"}
AUTO_SIZE = "auto"
DEFAULT_SIZES = {"kapell": AUTO_SIZE, "kpa": WHOLE_GPU, "static": WHOLE_GPU}
"""The replica size of a bare autoscaler name."""


class ServingBenchError(KapellError):
    """A ``kapell sim serve`` argument is invalid."""


@dataclass(frozen=True)
class ServeOptions:
    """The arguments of one ``kapell sim serve`` run."""

    profile: str
    router: str = "least-tokens"
    slo_ttft_s: float = 1.0
    slo_tpot_s: float = 0.1
    min_replicas: int = 1
    max_replicas: int = 64
    cold_start_s: float | None = None
    warm_tier: int = 0
    scale_to_zero_after_s: float = 300.0
    seed: int = 0
    warmup_s: float | None = None
    """Pre-roll seconds (see ``replay``); None: 300 s, or the whole trace if shorter."""
    knobs: dict[str, float | None] = field(default_factory=dict)
    """Knob per autoscaler when not sweeping (None: the policy's default)."""


def parse_autoscalers(text: str) -> list[str]:
    """Labels ``NAME`` or ``NAME@SIZE`` (SIZE: ``gpu``, a MIG profile or ``auto``), in order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if base_name(n) not in AUTOSCALERS]
    if unknown or not names or len(set(names)) < len(names):
        raise ServingBenchError(
            f"--autoscaler: unknown or repeated {', '.join(unknown) or '(none)'}: expected a comma "
            f"list of {', '.join(AUTOSCALERS)}, each optionally @SIZE (gpu, auto, e.g. 3g.40gb)"
        )
    return names


def base_name(label: str) -> str:
    """The autoscaler in a label: ``kapell@3g.40gb`` -> ``kapell``."""
    return label.partition("@")[0]


def label_size(options: ServeOptions, label: str) -> str:
    """The replica size a label asks for (``gpu``, a MIG profile or ``auto``); a bare name takes
    ``DEFAULT_SIZES``. A size the profile's GPU has no slice for, or whose slice cannot hold
    the model, is a ``ReplicaSizeError``."""
    size = label.partition("@")[2] or DEFAULT_SIZES[base_name(label)]
    if size != AUTO_SIZE:
        replica_size(load_profile(options.profile), size)
    return size


def twin_config(
    trace: Trace,
    options: ServeOptions,
    initial_replicas: int,
    cold_start_s: float | None = None,
    tune: Tune | None = None,
) -> TwinConfig:
    """The twin's settings for ``trace`` under ``options`` (the replicas' size is the Model's)."""
    replicas = SimSettings(
        profile=load_profile(options.profile),
        prefix_block_tokens=trace.block_tokens,
        cold_start_s=cold_start_s,
        warm_tier=options.warm_tier,
        seed=options.seed,
    )
    return TwinConfig(replicas=replicas, initial_replicas=initial_replicas, tune=tune)


def twin_model(
    options: ServeOptions, name: str, knob: float | None, size: str = WHOLE_GPU
) -> Model:
    """The ``sim`` Model a replay serves: autoscaler ``name`` with its main knob at ``knob``
    where the Model's spec holds it (kapell's tokens/s, static's replica count), replicas of
    ``size`` (``auto``: the sizing policy picks, and kapell's tokens/s are per whole GPU) and
    the options' SLO (what the sizing policy sizes for)."""
    scaling: dict[str, Any] = {
        "autoscaler": POLICIES[name],
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "scaleToZeroAfter": f"{round(options.scale_to_zero_after_s * 1000)}ms",
    }
    if name == "static":
        count = int(knob if knob is not None else max(options.min_replicas, 1))
        scaling.update(minReplicas=min(options.min_replicas, count), maxReplicas=count)
    elif name == "kapell" and knob is not None:
        scaling["targetTokensPerSecond"] = knob
    spec = {
        "source": {"uri": options.profile},
        "engine": {"name": "sim"},
        "resources": {"gpu": _gpu_request(size)},
        "scaling": scaling,
        "routing": {"strategy": options.router},
        "slo": {
            "ttft": f"{round(options.slo_ttft_s * 1000)}ms",
            "tpot": f"{round(options.slo_tpot_s * 1000)}ms",
        },
    }
    return Model(metadata=ObjectMeta(name="twin"), spec=ModelSpec.model_validate(spec))


def _gpu_request(size: str) -> dict[str, Any]:
    """``spec.resources.gpu`` for a replica size: sized by the policy, a whole GPU or a slice."""
    if size == AUTO_SIZE:
        return {"auto": True}
    return {"count": 1} if size == WHOLE_GPU else {"migProfile": size}


def tuning(options: ServeOptions, name: str, knob: float | None) -> Tune | None:
    """What a replay sets beyond the Model's spec: KPA's target concurrency (its knob), and
    where kapell learns a replica's capacity, the start of that estimate: the whole GPU's
    ``peak_tokens_per_s`` times the replica's GPU share (an overestimate, which saturated
    replicas correct downward) rather than the policy's cautious 1,000 tokens/s, which an H100
    exceeds thirty-fold: started low, the fleet is so large that no replica ever saturates and
    the estimate never rises."""
    if name == "kpa" and knob is not None:
        return lambda config: dc_replace(config, target_concurrency=knob)
    if name == "kapell" and knob is None:
        peak = peak_tokens_per_s(replica_size(load_profile(options.profile), WHOLE_GPU))
        return lambda config: dc_replace(
            config, initial_capacity_tokens_per_s=peak * config.replica_gpu_share
        )
    return None


def replay(
    trace: Trace,
    options: ServeOptions,
    label: str,
    knob: float | None,
    progress: Callable[[float], None] | None = None,
    trough: TroughTwin | None = None,
) -> tuple[TwinRun, float]:
    """One replay of ``trace`` under autoscaler ``name`` at ``knob``, after a pre-roll.

    The first ``warmup`` seconds of the trace are played once before the trace itself, so every
    policy meets the measured part in its steady state (a static fleet is born at full size,
    dynamic ones at ``min_replicas``; an ``auto`` fleet is sized by the policy from the
    pre-roll's demand on). ``trough``: an opportunistic job sharing the fleet's GPUs. Returns
    the run and when its measured part begins.
    """
    if options.router not in ROUTERS:
        raise ServingBenchError(
            f"--router: unknown {options.router!r}: expected one of {', '.join(ROUTERS)}"
        )
    name = base_name(label)
    initial = int(knob) if name == "static" and knob is not None else max(options.min_replicas, 1)
    config = twin_config(
        trace,
        options,
        min(initial, options.max_replicas),
        options.cold_start_s,
        tuning(options, name, knob),
    )
    config = dc_replace(config, trough=trough)
    model = twin_model(options, name, knob, label_size(options, label))
    preroll_s = warmup_for(options, trace.duration_s)
    requests = [r for r in trace.requests if r.arrival_s < preroll_s]
    requests += [dc_replace(r, arrival_s=r.arrival_s + preroll_s) for r in trace.requests]
    run = Twin(config, requests, model, progress=progress).replay()
    return run, preroll_s


def summarize(run: TwinRun, options: ServeOptions, measured_from_s: float = 0.0) -> dict[str, Any]:
    """The per-autoscaler numbers ``kapell sim serve --json`` prints."""
    end_s = run.requests[-1].arrival_s if run.requests else 0.0
    warmup_s = measured_from_s
    records = [r for r in run.requests if r.arrival_s >= warmup_s]
    ttft = np.array([r.first_token_s - r.arrival_s for r in records])
    decode_tokens = np.array([max(r.output_tokens - 1, 1) for r in records])
    tpot = np.array([(r.finish_s - r.first_token_s) for r in records]) / decode_tokens
    good = (ttft <= options.slo_ttft_s) & (tpot <= options.slo_tpot_s)
    waited = np.array([r.waited_for_replica for r in records], dtype=bool)
    gpu_s = _gpu_seconds_between(run, warmup_s, end_s)
    hits = sum(r.cached_tokens for r in records)
    queries = sum(r.prompt_tokens for r in records)
    return {
        "requests": len(records),
        "slo_attainment": round(float(good.mean()), 5) if len(records) else 0.0,
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p99_s": _pct(ttft, 99),
        "tpot_p50_s": _pct(tpot, 50),
        "tpot_p99_s": _pct(tpot, 99),
        "gpu_hours": round(gpu_s / 3600, 4),
        "sleeping_gpu_hours": round(run.sleeping_gpu_seconds / 3600, 4),
        "cold_starts": run.cold_starts,
        "wakes": run.wakes,
        "requests_waited_for_replica": int(waited.sum()),
        "waited_ttft_p50_s": _pct(ttft[waited], 50),
        "prefix_cache_hit_rate": round(hits / queries, 4) if queries else 0.0,
        "max_replicas_used": max((t[2] for t in run.timeline), default=0),
        "sizes": _sizes_between(run, warmup_s),
        "measured_from_s": round(warmup_s, 1),
        "duration_s": round(end_s - warmup_s, 1),
    }


def warmup_for(options: ServeOptions, duration_s: float) -> float:
    """Seconds of pre-roll: ``--warmup-s``, else 300 s (or the whole trace, if shorter)."""
    if options.warmup_s is not None:
        return options.warmup_s
    return min(300.0, duration_s)


def _gpu_seconds_between(run: TwinRun, start_s: float, end_s: float) -> float:
    """GPU-seconds billed in ``[start_s, end_s]``, the same window for every policy.

    The running total is sampled at every reconcile, whose times differ between policies;
    reading it at the sample at or before each end (as this once did) billed a policy up to a
    reconcile period of its whole fleet more than another holding the same replicas (kapell and
    a static fleet of the same two GPUs differed by 0.1%). The total grows linearly between
    samples while no replica changes state, so it is interpolated at both ends.
    """
    points = run.gpu_seconds_by_window
    if not points:
        return 0.0
    times = [t_s for t_s, _ in points]
    totals = [gpu_s for _, gpu_s in points]
    return float(np.interp(end_s, times, totals) - np.interp(start_s, times, totals))


def _sizes_between(run: TwinRun, start_s: float) -> list[list[Any]]:
    """``[t_s, size]`` of an ``auto`` Model from ``start_s`` on: the size it ran at then, and
    each resize after (empty for a fixed size)."""
    before = [[round(t_s, 1), size] for t_s, size in run.sizes if t_s <= start_s][-1:]
    return before + [[round(t_s, 1), size] for t_s, size in run.sizes if t_s > start_s]


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if len(values) else 0.0


def timeline(run: TwinRun, every_s: float = 60.0) -> list[list[float]]:
    """``[t_s, ready, gpu_holding, desired]`` about every ``every_s`` seconds."""
    out: list[list[float]] = []
    next_s = 0.0
    for t_s, ready, holding, desired in run.timeline:
        if t_s >= next_s:
            out.append([t_s, ready, holding, desired])
            next_s = t_s + every_s
    return out


def sweep(
    trace: Trace,
    options: ServeOptions,
    label: str,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[list[dict[str, Any]], TwinRun | None]:
    """Every knob tried for ``label`` with its summary, and the run at the cheapest 99% knob."""
    name = base_name(label)
    points: list[dict[str, Any]] = []
    best: tuple[float, TwinRun] | None = None
    successes = 0
    for knob in SWEEPS[name]:
        if name == "static" and knob > options.max_replicas:
            break
        step = f"{label} {KNOB_NAMES[name]}={knob:g}"
        run, measured_from_s = replay(trace, options, label, knob, _bind(progress, step))
        summary = summarize(run, options, measured_from_s)
        points.append({KNOB_NAMES[name]: knob, **summary})
        if summary["slo_attainment"] >= ATTAINMENT_GOAL:
            successes += 1
            if best is None or summary["gpu_hours"] < best[0]:
                best = (summary["gpu_hours"], run)
            if successes >= (1 if name == "static" else 2):
                break
    return points, best[1] if best else None


def _bind(
    progress: Callable[[str, float], None] | None, label: str
) -> Callable[[float], None] | None:
    if progress is None:
        return None
    return lambda fraction: progress(label, fraction)


def serve_report(
    trace: Trace,
    options: ServeOptions,
    autoscalers: Sequence[str],
    *,
    do_sweep: bool,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[dict[str, Any], dict[str, TwinRun]]:
    """The JSON report and, per autoscaler, the run its timeline plot shows."""
    report: dict[str, Any] = {
        "trace": trace.name,
        "profile": options.profile,
        "router": options.router,
        "slo": {"ttft_s": options.slo_ttft_s, "tpot_s": options.slo_tpot_s},
        "min_replicas": options.min_replicas,
        "seed": options.seed,
        "autoscalers": {},
    }
    runs: dict[str, TwinRun] = {}
    sizes = {label: label_size(options, label) for label in autoscalers}  # bad ones fail early
    for label in autoscalers:
        name = base_name(label)
        size = sizes[label]
        if do_sweep:
            points, best = sweep(trace, options, label, progress)
            cheapest = min(
                (p for p in points if p["slo_attainment"] >= ATTAINMENT_GOAL),
                key=lambda p: p["gpu_hours"],
                default=None,
            )
            entry = dict(cheapest) if cheapest else dict(points[-1])
            entry["gpu_hours_at_99"] = cheapest["gpu_hours"] if cheapest else None
            entry["sweep"] = [
                {
                    k: p[k]
                    for k in (
                        KNOB_NAMES[name],
                        "gpu_hours",
                        "slo_attainment",
                        "ttft_p99_s",
                        "tpot_p99_s",
                    )
                }
                for p in points
            ]
            run = best
        else:
            knob = options.knobs.get(name)
            run, measured_from_s = replay(trace, options, label, knob, _bind(progress, label))
            entry = {KNOB_NAMES[name]: knob, **summarize(run, options, measured_from_s)}
        entry["replica_size"] = size
        if size != AUTO_SIZE:
            gpu_fraction = replica_size(load_profile(options.profile), size).gpu_fraction
            entry["gpu_fraction"] = round(gpu_fraction, 4)
        if run is not None:
            entry["timeline"] = timeline(run)
            runs[label] = run
        report["autoscalers"][label] = entry
    if do_sweep:
        report["ratios"] = _ratios(report["autoscalers"])
    return report, runs


def _ratios(entries: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each kapell label's ``gpu_hours_at_99`` over each peer's (``kapell_over_kpa``, and
    ``kapell_over_kpa@auto`` where the peer runs the same sizing rule)."""
    ratios: dict[str, float | None] = {}
    peers = [k for k in entries if base_name(k) != "kapell"]
    for label in (k for k in entries if base_name(k) == "kapell"):
        base = entries[label].get("gpu_hours_at_99")
        for other in peers:
            theirs = entries[other].get("gpu_hours_at_99")
            ratios[f"{label}_over_{other}"] = round(base / theirs, 3) if base and theirs else None
    return ratios


def plot(report: dict[str, Any], runs: dict[str, TwinRun], path: Path) -> None:
    """Replica timelines and, after a sweep, SLO attainment against GPU-hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = any("sweep" in e for e in report["autoscalers"].values())
    fig, axes = plt.subplots(1, 2 if swept else 1, figsize=(11 if swept else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    for name, run in runs.items():
        ts = [t[0] / 60 for t in run.timeline]
        ax.step(ts, [t[2] for t in run.timeline], where="post", label=name, linewidth=1)
    entries: list[dict[str, Any]] = list(report["autoscalers"].values())
    measured_from_s = float(entries[0].get("measured_from_s", 0.0)) if entries else 0.0
    if measured_from_s:
        ax.axvline(measured_from_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.annotate("measured →", (measured_from_s / 60, ax.get_ylim()[1]), fontsize=7,
                    ha="left", va="top", color="grey")  # fmt: skip
    ax.set_xlabel("time (min)")
    ax.set_ylabel("replicas holding a GPU or slice")
    ax.set_title(f"{report['trace']} · {report['profile']}", fontsize=9)
    ax.legend(fontsize=8)
    if swept:
        ax2 = axes[0][1]
        for name, entry in report["autoscalers"].items():
            pts = entry.get("sweep", [])  # in sweep order: frugal to generous
            ax2.plot(
                [p["gpu_hours"] for p in pts],
                [100 * p["slo_attainment"] for p in pts],
                "o-",
                label=name,
                markersize=3,
            )
        ax2.axhline(100 * ATTAINMENT_GOAL, color="grey", linestyle=":", linewidth=1)
        ax2.set_xlabel("GPU-hours")
        ax2.set_ylabel("SLO attainment (%)")
        lowest = min(
            (
                100 * p["slo_attainment"]
                for e in report["autoscalers"].values()
                for p in e.get("sweep", [])
            ),
            default=90.0,
        )
        ax2.set_ylim(max(0.0, math.floor(lowest) - 1), 100.5)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
