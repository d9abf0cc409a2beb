"""The ``sim`` engine replicas the gateway benchmarks start (shared by the load and the
scale-from-zero benchmark, which import it rather than each other)."""

from __future__ import annotations

import sys

MODEL = "bench"
"""The model name the benchmarks' sim replicas serve."""


def sim_command(port: int, *, speedup: float, cold_start_s: float, profile: str) -> list[str]:
    """The command line of one ``sim`` replica serving ``MODEL`` on ``port``."""
    return [sys.executable, "-m", "kapell.engines.sim", "--model", profile, "--served-name",
            MODEL, "--host", "127.0.0.1", "--port", str(port), "--cold-start-s",
            str(cold_start_s), "--speedup", str(speedup)]  # fmt: skip
