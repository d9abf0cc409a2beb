"""``kapell drift``: the running instance's drift state per model (and prompt version);
``kapell bench drift``: measured false alarms and detections; the tracing options shared by
``kapell up`` and ``kapell gateway``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call

OtlpEndpoint = Annotated[
    str | None,
    typer.Option(
        "--otlp-endpoint",
        envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
        help="OTLP/HTTP collector (e.g. http://127.0.0.1:4318) that gets one trace span per "
        "request (needs the otel extra of kapell). Default: no tracing.",
    ),
]
TraceContent = Annotated[
    bool,
    typer.Option("--trace-content", help="Put request and response bodies in the trace spans."),
]


def drift(
    as_json: Annotated[bool, typer.Option("--json", help="Print the admin API's JSON.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Drift per model and prompt version: each feature's PSI of the last compared window
    against the reference, its threshold, the shift of its median or p90, the window sizes,
    and whether it drifts."""
    report = call(state_dir, "GET", "/drift")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    settings = report["settings"]
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
    table = Table(
        title=f"Drift (reference {settings['referenceRequests']} requests, windows of "
        f"{settings['windowRequests']}, false-alarm rate {settings['falseAlarmRate']:g} per "
        f"feature and window, latency drifts at {1 + settings['latencyShift']:g}× or more)"
    )
    for header in ("MODEL", "PROMPT", "VERSION", "FEATURE", "PSI", "THRESHOLD", "SHIFT"):
        table.add_column(header, no_wrap=True)
    for header in ("REFERENCE", "CURRENT", "WINDOWS", "STATE"):
        table.add_column(header, no_wrap=True)
    for key in report["keys"]:
        ids = (key["model"], key["prompt"] or "-", key["version"] or "-")
        sizes = (
            f"{key['referenceRequests']}/{settings['referenceRequests']}",
            f"{key['currentRequests']}/{settings['windowRequests']}",
            str(key["windowsCompared"]),
        )
        if not key["features"]:
            table.add_row(*ids, "-", "-", "-", "-", *sizes, "warming up")
        for f in key["features"]:
            shift = "-" if f["shift"] is None else f"{f['shift']:.2f}×"
            table.add_row(
                *ids, f["feature"], f"{f['statistic']:.4f}", f"{f['threshold']:.4f}", shift,
                *sizes, _state(f),
            )  # fmt: skip
    console.print(table if report["keys"] else "no request tracked yet")


def _state(feature: dict[str, Any]) -> str:
    return "[red]drifting[/red]" if feature["drifting"] else "stable"


def bench_drift(
    window: Annotated[int, typer.Option("--window", help="Requests per window.")] = 1000,
    false_alarm_rate: Annotated[
        float, typer.Option("--false-alarm-rate", help="Stated rate per feature and window.")
    ] = 0.001,
    replays: Annotated[int, typer.Option("--replays", min=10, help="Stationary replays.")] = 5000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """False alarms on stationary replays and detections of a shift (longer, mostly Cyrillic
    prompts) and of a subtle one (prompts 30 % longer), against the rule of thumb PSI > 0.25
    measured on the same windows; then the same on a loaded machine (latency times an
    autocorrelated load factor), stationary and with replicas three times slower. JSON out."""
    from kapell.bench.drift import run_drift_bench
    from kapell.policy.drift import DriftSettings

    settings = DriftSettings(window, window, false_alarm_rate)
    typer.echo(json.dumps(run_drift_bench(settings, replays, seed), indent=2))
