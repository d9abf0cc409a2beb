"""``kapell bench placement``: placement policies on the FGD paper's protocol, JSON out."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from kapell.api.errors import KapellError

SEED_BASE = 42  # the FGD artifact's seeds are 42..51


def bench_placement(
    nodes: Annotated[Path, typer.Option(help="Node list CSV (openb_node_list_gpu_node.csv).")],
    pods: Annotated[Path, typer.Option(help="Pod list CSV (openb_pod_list_*.csv).")],
    policy: Annotated[
        str, typer.Option(help="Policies, comma-separated, or 'all'.")
    ] = "fgd,kapell",
    seeds: Annotated[int, typer.Option(help="Number of seeds (42, 43, ...).")] = 10,
    inflation: Annotated[
        float, typer.Option(help="Arrived GPU demand at the end, times cluster GPUs.")
    ] = 1.3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write allocation curves to this PNG.")] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            help="Stress variant of the pod list: share-heavy, gpu-model, multi-gpu, cpu-heavy."
        ),
    ] = None,
) -> None:
    """Allocation ratio at 100% and 130% arrived GPU demand, per policy, mean over seeds."""
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from kapell.bench.placement import (
        VARIANTS,
        make_variant,
        paired_with,
        read_nodes,
        read_pods,
        run_once,
        summarize,
        total_gpu_milli,
    )
    from kapell.policy.placement.policies import POLICY_NAMES

    names = list(POLICY_NAMES) if policy == "all" else [p.strip() for p in policy.split(",")]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        raise KapellError(
            f"--policy: unknown {', '.join(unknown)}; expected 'all' or of {', '.join(POLICY_NAMES)}"
        )
    if seeds < 1:
        raise KapellError("--seeds: expected a positive number of seeds")
    node_specs, pod_requests = read_nodes(nodes), read_pods(pods)
    if variant is not None:
        if variant not in VARIANTS:
            raise KapellError(
                f"--variant: unknown {variant!r}; expected one of {', '.join(VARIANTS)}"
            )
        pod_requests = make_variant(pod_requests, node_specs, variant)
    total = total_gpu_milli(node_specs)
    report: dict[str, dict[str, object]] = {}
    curves: dict[str, dict[int, float]] = {}
    console = Console(stderr=True)
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=json_out) as progress:
        for name in names:
            task = progress.add_task(f"{name:>15}", total=None)
            results = []
            for i in range(seeds):
                progress.update(task, description=f"{name:>15} seed {SEED_BASE + i}")
                results.append(
                    run_once(
                        node_specs,
                        pod_requests,
                        name,
                        SEED_BASE + i,
                        inflation,
                        tick=partial(progress.advance, task),
                    )
                )
                if i == 0:
                    progress.update(task, total=len(results[0].arrived_milli) * seeds)
            report[name], curves[name] = summarize(results, total)
    out: dict[str, object] = {"policies": report}
    if len(report) > 1 and "fgd" in report:
        out["paired_vs_fgd"] = paired_with(report, "fgd")
    typer.echo(json.dumps(out, indent=None if json_out else 2))
    if plot is not None:
        _plot(curves, plot)


def _plot(curves: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        xs = sorted(curve)
        ax.plot(xs, [curve[x] for x in xs], label=name)
    ax.set_xlabel("arrived GPU demand (% of cluster GPUs)")
    ax.set_ylabel("GPU allocation ratio (%)")
    ax.set_xlim(0, 130)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
