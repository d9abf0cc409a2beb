"""``kapell sim``: the serving digital twin on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

sim_app = typer.Typer(help="Replay LLM traces through kapell's router and autoscalers (simulated).",
                      no_args_is_help=True)  # fmt: skip


@sim_app.command()
def serve(
    trace: Annotated[Path, typer.Option(help="Azure LLM .csv or Mooncake .jsonl trace.")],
    profile: Annotated[str, typer.Option(help="Latency profile, e.g. h100-llama3-8b.")],
    autoscaler: Annotated[
        str,
        typer.Option(
            help="Comma list of kapell, kpa, static; NAME@SIZE runs replicas on a MIG slice "
            "(e.g. kapell@3g.40gb, billed g/7 of a GPU), whole GPUs (@gpu) or @auto (the "
            "sizing policy of kapell up picks the size from the metered demand, and re-picks "
            "as it moves). "
            "Bare kapell is kapell@auto; bare kpa and static use whole GPUs."
        ),
    ] = "kapell,kpa,static",
    router: Annotated[
        str, typer.Option(help="least-tokens, prefix-affinity or round-robin.")
    ] = "least-tokens",
    min_replicas: Annotated[int, typer.Option(min=0)] = 1,
    max_replicas: Annotated[int, typer.Option(min=1)] = 64,
    slo_ttft_ms: Annotated[float, typer.Option(min=1)] = 1000.0,
    slo_tpot_ms: Annotated[float, typer.Option(min=1)] = 100.0,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="Sweep each autoscaler's main knob.")
    ] = False,
    seed: int = 0,
    warmup_s: Annotated[
        float | None,
        typer.Option(
            help="Pre-roll: seconds of the trace played once, uncounted, before it; default 300."
        ),
    ] = None,
    cold_start_s: Annotated[float | None, typer.Option(help="Default: the profile's.")] = None,
    warm_tier: Annotated[
        int, typer.Option(min=0, help="Replicas kept asleep after scale-down.")
    ] = 0,
    scale_to_zero_after_s: Annotated[float, typer.Option(min=0)] = 300.0,
    target_tokens_per_s: Annotated[
        float | None, typer.Option(help="kapell's knob; default: learned.")
    ] = None,
    target_concurrency: Annotated[float | None, typer.Option(help="KPA's knob; default 8.")] = None,
    static_replicas: Annotated[
        int | None, typer.Option(help="static's knob; default min-replicas.")
    ] = None,
    time_scale: Annotated[
        float, typer.Option(help="Multiply arrival times (<1: more load).")
    ] = 1.0,
    start_s: Annotated[float, typer.Option(help="Slice: first arrival second kept.")] = 0.0,
    duration_s: Annotated[float | None, typer.Option(help="Slice: seconds kept.")] = None,
    gate_s: Annotated[
        str | None,
        typer.Option(
            help="ON,OFF: keep only arrivals in the first ON seconds of every ON+OFF (after "
            "--time-scale, before the slice): bursts with idle gaps."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write replica timelines (and sweep curves) to a PNG.")
    ] = None,
) -> None:
    """Replay TRACE per autoscaler; print SLO attainment, latency percentiles and GPU-hours."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from kapell.bench import serving

    names = serving.parse_autoscalers(autoscaler)
    loaded = _load(trace, time_scale, gate_s, start_s, duration_s)
    options = serving.ServeOptions(
        profile=profile,
        router=router,
        slo_ttft_s=slo_ttft_ms / 1e3,
        slo_tpot_s=slo_tpot_ms / 1e3,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cold_start_s=cold_start_s,
        warm_tier=warm_tier,
        scale_to_zero_after_s=scale_to_zero_after_s,
        seed=seed,
        warmup_s=warmup_s,
        knobs={"kapell": target_tokens_per_s, "kpa": target_concurrency, "static": static_replicas},
    )
    from kapell.engines.sim.latency import load_profile

    load_profile(profile)  # fail on a bad name before reading anything else
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=1.0)

        def progress(label: str, fraction: float) -> None:
            bar.update(task, description=label, completed=fraction)

        report, runs = serving.serve_report(
            loaded, options, names, do_sweep=sweep, progress=progress
        )
    if plot is not None:
        serving.plot(report, runs, plot)
    if json_out:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print_table(report)


@sim_app.command()
def trough(
    trace: Annotated[Path, typer.Option(help="Azure LLM .csv or Mooncake .jsonl trace.")],
    profile: Annotated[str, typer.Option(help="Latency profile, e.g. h100-llama3-8b.")],
    pool_gpus: Annotated[
        int, typer.Option(min=1, help="GPUs the serving fleet owns (its max replicas).")
    ],
    job_gpus: Annotated[int, typer.Option(min=1, help="GPUs the opportunistic job needs.")] = 1,
    reserve_gpus: Annotated[
        int, typer.Option(min=0, help="Idle GPUs never lent (a burst's first replicas).")
    ] = 1,
    checkpoint_every_s: Annotated[
        float, typer.Option(min=1, help="Training time between the job's checkpoints.")
    ] = 60.0,
    start_s: Annotated[
        float, typer.Option(help="A training run's start-up (cluster, checkpoint load).")
    ] = 60.0,
    slo_ttft_ms: Annotated[float, typer.Option(min=1)] = 1000.0,
    slo_tpot_ms: Annotated[float, typer.Option(min=1)] = 100.0,
    min_replicas: Annotated[int, typer.Option(min=0)] = 1,
    seed: int = 0,
    time_scale: Annotated[
        float, typer.Option(help="Multiply arrival times (<1: more load).")
    ] = 1.0,
    gate_s: Annotated[
        str | None, typer.Option(help="ON,OFF: keep only arrivals in the first ON of ON+OFF s.")
    ] = None,
    slice_start_s: Annotated[float, typer.Option(help="Slice: first arrival second kept.")] = 0.0,
    duration_s: Annotated[float | None, typer.Option(help="Slice: seconds kept.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Serve TRACE on a pool of GPUs, alone and with an opportunistic TrainingJob borrowing
    the idle ones; print serving's SLO attainment and the training GPU-hours gained."""
    from kapell.bench.serving import ServeOptions
    from kapell.bench.trough import TroughOptions, trough_report
    from kapell.engines.sim.latency import load_profile

    load_profile(profile)
    loaded = _load(trace, time_scale, gate_s, slice_start_s, duration_s)
    serve = ServeOptions(
        profile=profile,
        slo_ttft_s=slo_ttft_ms / 1e3,
        slo_tpot_s=slo_tpot_ms / 1e3,
        min_replicas=min_replicas,
        max_replicas=pool_gpus,
        seed=seed,
    )
    options = TroughOptions(
        pool_gpus=pool_gpus,
        job_gpus=job_gpus,
        reserve_gpus=reserve_gpus,
        checkpoint_steps=max(1, round(checkpoint_every_s)),
        start_s=start_s,
    )
    report = trough_report(loaded, serve, options)
    if json_out:
        typer.echo(json.dumps(report, indent=1))
        return
    alone, shared = report["serving_alone"], report["serving_with_training"]
    train = report["training"]
    typer.echo(
        f"{report['trace']}: pool of {pool_gpus} GPUs, a {job_gpus}-GPU opportunistic job\n"
        f"  serving SLO attainment: {alone['slo_attainment']:.4f} alone, "
        f"{shared['slo_attainment']:.4f} with training\n"
        f"  training: {train['gpu_hours_lent']:.3f} GPU-h lent of "
        f"{train['pool_idle_gpu_hours_serving_alone']:.3f} idle, "
        f"{train['gpu_hours_kept']:.3f} kept, {train['gpu_hours_lost_at_hand_backs']:.3f} lost "
        f"at hand-backs, {train['runs']} runs"
    )


def _load(
    trace: Path, time_scale: float, gate_s: str | None, start_s: float, duration_s: float | None
) -> Any:
    """The trace as the options shape it: scaled, gated, sliced; a user error if empty."""
    from kapell.bench.serving import ServingBenchError
    from kapell.bench.traces import gate_trace, read_trace, scale_time, slice_trace

    loaded = scale_time(read_trace(trace), time_scale)
    if gate_s is not None:
        loaded = gate_trace(loaded, *_on_off(gate_s))
    loaded = slice_trace(loaded, start_s, duration_s)
    if not loaded.requests:
        raise ServingBenchError(f"{trace}: no requests in the selected slice")
    return loaded


def _on_off(text: str) -> tuple[float, float]:
    """``--gate-s 300,600`` -> (300.0, 600.0); anything else is a user error."""
    from kapell.bench.serving import ServingBenchError

    parts = text.split(",")
    try:
        on_s, off_s = (float(p) for p in parts)
    except ValueError:
        raise ServingBenchError(
            f"--gate-s: expected ON,OFF in seconds (e.g. 300,600), got {text!r}"
        ) from None
    return on_s, off_s


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['trace']} · {report['profile']} · {report['router']}")
    columns = {"size": "replica_size", "requests": "requests", "SLO ok": "slo_attainment",
               "TTFT p50 s": "ttft_p50_s", "TTFT p99 s": "ttft_p99_s", "TPOT p50 s": "tpot_p50_s",
               "TPOT p99 s": "tpot_p99_s", "GPU-h": "gpu_hours", "cold starts": "cold_starts",
               "GPU-h at 99%": "gpu_hours_at_99"}  # fmt: skip
    table.add_column("autoscaler", no_wrap=True)
    for header in columns:
        table.add_column(header, justify="right")
    for name, entry in report["autoscalers"].items():
        cells = [_cell(entry.get(key)) for key in columns.values()]
        table.add_row(name, _size_cell(entry), *cells[1:])
    Console(width=max(Console().width, 150)).print(table)


def _size_cell(entry: dict[str, Any]) -> str:
    """The replica size; for ``auto``, the sizes the policy ran in the measured part, in order
    (``auto: 3g.40gb→gpu``)."""
    sizes = [size for _, size in entry.get("sizes", [])]
    if entry.get("replica_size") != "auto" or not sizes:
        return _cell(entry.get("replica_size"))
    return "auto: " + "→".join(sizes)


def _cell(value: Any) -> str:
    """Numbers to three significant figures, absent values blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@sim_app.command("make-trace")
def make_trace(
    out: Annotated[Path, typer.Option(help="Where to write the trace (Mooncake .jsonl).")],
    seed: int = 0,
    duration_s: Annotated[float, typer.Option(min=1)] = 1800.0,
    rate_per_s: Annotated[
        float, typer.Option(min=0.001, help="Mean arrival rate in an ON phase.")
    ] = 6.0,
    on_mean_s: Annotated[float, typer.Option(min=1, help="Mean ON phase length.")] = 90.0,
    off_mean_s: Annotated[float, typer.Option(min=1, help="Mean OFF phase length.")] = 150.0,
    prompt_median: Annotated[int, typer.Option(min=1, help="Median prompt tokens.")] = 3000,
    output_median: Annotated[int, typer.Option(min=1, help="Median output tokens.")] = 150,
) -> None:
    """Write a synthetic bursty trace: long prompts, ON/OFF phases, shared prefixes."""
    from kapell.bench.synthetic import BurstyShape, bursty_trace, write_jsonl

    shape = BurstyShape(
        duration_s=duration_s,
        rate_per_s=rate_per_s,
        on_mean_s=on_mean_s,
        off_mean_s=off_mean_s,
        prompt_median=prompt_median,
        output_median=output_median,
        seed=seed,
    )
    trace = bursty_trace(shape)
    write_jsonl(trace, out)
    typer.echo(f"{out}: {len(trace.requests)} requests over {trace.duration_s:.0f} s")
