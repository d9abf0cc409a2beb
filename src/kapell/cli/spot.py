"""``kapell bench spot``: spot versus on-demand under a deadline, on real availability traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def bench_spot(
    trace: Annotated[
        list[Path], typer.Option("--trace", help="Availability trace JSON, or a folder of them.")
    ],
    job_hours: Annotated[float, typer.Option("--job-hours", help="Work in hours.")] = 48.0,
    deadline_hours: Annotated[
        float, typer.Option("--deadline-hours", help="Hours from submission to the deadline.")
    ] = 52.0,
    restart_overhead_min: Annotated[
        float, typer.Option("--restart-overhead-min", help="Minutes lost at each (re)start.")
    ] = 12.0,
    start_every_hours: Annotated[
        float, typer.Option("--start-every-hours", help="One job submitted every N trace hours.")
    ] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="Compact JSON (else indented).")] = False,
) -> None:
    """Cost (fraction of on-demand only) and deadlines met, per policy, per trace."""
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from kapell.api.errors import KapellError
    from kapell.bench.spot import run_spot_bench
    from kapell.policy.spot.replay import SpotJob

    for flag, value in (
        ("--job-hours", job_hours),
        ("--deadline-hours", deadline_hours),
        ("--start-every-hours", start_every_hours),
    ):
        if value <= 0:
            raise KapellError(f"{flag}: expected a positive number of hours, got {value}")
    if restart_overhead_min < 0:
        raise KapellError(
            f"--restart-overhead-min: expected minutes >= 0, got {restart_overhead_min}"
        )
    job = SpotJob(job_hours * 3600, deadline_hours * 3600, restart_overhead_min * 60)
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("spot policies x traces", total=None)
        result = run_spot_bench(
            trace, job, start_every_hours,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    typer.echo(json.dumps(result, indent=None if as_json else 2))
