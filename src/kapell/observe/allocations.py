"""Where a process's memory goes, on request: the lines holding the most traced memory.

Tracing is off unless the process starts with ``PYTHONTRACEMALLOC=1`` (it slows allocation and
takes memory of its own); then a long-running command logs the top lines on ``SIGUSR1``.
"""

from __future__ import annotations

import logging
import tracemalloc

log = logging.getLogger(__name__)
TOP_LINES = 25


def log_top_allocations(limit: int = TOP_LINES) -> None:
    """Log the ``limit`` source lines holding the most memory now, and the traced peak."""
    if not tracemalloc.is_tracing():
        log.warning("memory tracing is off: start the process with PYTHONTRACEMALLOC=1")
        return
    current, peak = tracemalloc.get_traced_memory()
    stats = tracemalloc.take_snapshot().statistics("lineno")
    lines = [f"traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB; top lines:"]
    lines += [
        f"  {s.size / 2**20:8.2f} MiB {s.count:9d} blocks  {s.traceback[0]}" for s in stats[:limit]
    ]
    log.warning("\n".join(lines))
