"""``kapell spend``: accounted spend per namespace and tenant, and each Budget against it."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call

_LIMIT_UNITS = {"tokens": "tokens", "gpuSeconds": "GPU-s", "joules": "J", "gramsCo2": "gCO2"}


def spend(
    namespace: Annotated[
        str | None, typer.Option("-n", "--namespace", help="One namespace; default all.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the admin API's JSON.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Spend today and this month (UTC) per namespace and tenant: tokens, GPU-seconds, joules
    and gCO2; then each Budget with what is left and whether it refuses new work."""
    from urllib.parse import quote

    query = "" if namespace is None else f"?namespace={quote(namespace)}"
    report = call(state_dir, "GET", "/spend" + query)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    # Piped, rich would fit the tables to 80 columns and cut the values scripts read.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
    table = Table(title=f"Spend (day {report['day']}, month {report['month']}, UTC)")
    for header in ("NAMESPACE", "TENANT", "PERIOD", "TOKENS IN", "TOKENS OUT", "GPU-S"):
        table.add_column(header, no_wrap=True)
    for header in ("JOULES", "gCO2"):
        table.add_column(header, no_wrap=True, justify="right")
    for row in report["rows"]:
        table.add_row(
            row["namespace"], row["tenant"], row["period"], str(row["tokensIn"]),
            str(row["tokensOut"]), f"{row['gpuSeconds']:.1f}",
            f"{row['joules']:.1f} ({row['energySource']})", f"{row['gramsCo2']:.3g}",
        )  # fmt: skip
    console.print(table if report["rows"] else "no spend accounted yet")
    if report["budgets"]:
        budgets = Table(title="Budgets")
        for header in ("NAMESPACE", "BUDGET", "PERIOD", "LIMITS", "REMAINING", "STATE"):
            budgets.add_column(header)
        for b in report["budgets"]:
            budgets.add_row(
                b["namespace"], b["name"], b["period"], _amounts(b["limits"]),
                _amounts(b["remaining"]), b["refusal"] or "within budget",
            )  # fmt: skip
        console.print(budgets)


def _amounts(values: dict[str, Any]) -> str:
    return ", ".join(f"{v:g} {_LIMIT_UNITS.get(k, k)}" for k, v in values.items()) or "-"
