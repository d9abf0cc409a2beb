"""``kapell energy report`` and the body of ``kapell bench carbon``.

Both import their heavy parts inside the function so ``kapell --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kapell.api.errors import KapellError
from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call

energy_app = typer.Typer(help="Energy per model and request (modelled or measured).",
                         no_args_is_help=True)  # fmt: skip


@energy_app.command("report")
def report(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    pue: Annotated[float, typer.Option("--pue", help="Power usage effectiveness, >= 1.")] = 1.0,
    kepler: Annotated[
        str | None,
        typer.Option(
            "--kepler",
            help="Kepler's /metrics URL: measured joules of the models' pods (on Kubernetes).",
        ),
    ] = None,
) -> None:
    """Joules per request and per 1k tokens for each model of a running instance."""
    from dataclasses import asdict

    from kapell.policy.energy import ModelUsage, default_power_models, energy_report

    if pue < 1.0:
        raise KapellError(f"--pue must be at least 1.0, got {pue}")
    usages = [ModelUsage.from_json(row) for row in call(state_dir, "GET", "/usage")["models"]]
    measured = None
    if kepler is not None:
        from kapell.observe.power import kepler_model_joules, scrape_kepler

        measured = kepler_model_joules(scrape_kepler(kepler), [u.model for u in usages])
    rows = energy_report(usages, default_power_models(), pue=pue, measured_j=measured)
    if as_json:
        typer.echo(json.dumps({"pue": pue, "models": [asdict(r) for r in rows]}, indent=2))
        return
    from kapell.cli.output import print_table

    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    typer.echo(f"Energy per model (PUE {pue:g}; W is per replica)")
    print_table(
        ["MODEL", "HARDWARE", "SOURCE", "KJ", "W", "J/REQ", "J/1K-TOK", "REQUESTS", "TOKENS"],
        [[r.model, f"{r.engine} on {r.hardware}", r.source, num(r.energy_j / 1e3, 2),
          num(r.avg_power_w, 1), num(r.joules_per_request), num(r.joules_per_1k_tokens),
          str(r.requests), str(r.tokens)] for r in rows],
    )  # fmt: skip


def bench_carbon(
    intensity: Annotated[
        str, typer.Option("--intensity", help="Intensity CSV file(s), comma separated.")
    ],
    job_hours: Annotated[int, typer.Option("--job-hours", min=1, help="Job length in hours.")],
    window_hours: Annotated[
        int, typer.Option("--window-hours", min=0, help="Hours a job may wait to start.")
    ],
    pausable: Annotated[bool, typer.Option("--pausable", help="The job may pause.")] = False,
    forecast: Annotated[
        str | None, typer.Option("--forecast", help="seasonal-ridge (default), seasonal-naive.")
    ] = None,
    signal: Annotated[
        str, typer.Option("--signal", help="Electricity Maps column: lca (default) or direct.")
    ] = "lca",
    decision: Annotated[
        str,
        typer.Option("--decision", help="point (re-plan on the forecast hourly) or stopping."),
    ] = "point",
    grid_forecast: Annotated[
        Path | None,
        typer.Option(
            "--grid-forecast",
            help="Folder of the grid operator's published day-ahead forecasts (ENTSO-E export) "
            "for the intensity file's zone: forecast with them (grid-ridge).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Compact JSON (else indented).")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG here.")] = None,
) -> None:
    """Savings of carbon-aware shifting with a forecast, vs the perfect-foresight oracle."""
    from kapell.bench.carbon import run_carbon_bench

    paths = [Path(p.strip()) for p in intensity.split(",") if p.strip()]
    result = run_carbon_bench(
        paths, job_hours, window_hours, pausable, forecast, signal, plot,
        show_progress=True, decision=decision, grid_forecast=grid_forecast,
    )  # fmt: skip
    typer.echo(json.dumps(result, indent=None if as_json else 2))
