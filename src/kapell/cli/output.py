"""Plain, kubectl-style output: aligned columns that are never cut, and ages like ``5m``.

Tables are written as text, not through rich: rich fits a table to the terminal and, when
stdout is a pipe, to 80 columns, cutting the values scripts read. Here a line is as long as
its values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import typer

COLUMN_GAP = "   "


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest value; the last one unpadded; nothing truncated."""
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        cells = [str(v).ljust(w) for v, w in zip(row[:-1], widths, strict=False)]
        typer.echo(COLUMN_GAP.join([*cells, str(row[-1])]).rstrip())


def age(timestamp: str, now: datetime | None = None) -> str:
    """How long ago an RFC 3339 UTC ``timestamp`` was, as kubectl writes it (``<unknown>``
    if it is not one)."""
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    return human_duration(max(seconds, 0))


def human_duration(seconds: int) -> str:
    """``42s``, ``3m12s``, ``45m``, ``3h15m``, ``20h``, ``3d4h``, ``12d``, ``2y30d``: coarser
    as it grows, two units at most (kubectl's ``HumanDuration``)."""
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m" + (f"{seconds % 60}s" if seconds % 60 else "")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" + (f"{minutes % 60}m" if minutes % 60 else "")
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d" + (f"{hours % 24}h" if hours % 24 else "")
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y" + (f"{days % 365}d" if days % 365 else "")
