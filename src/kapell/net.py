"""Loopback helpers every part of kapell and its tests share: a free port, a wait for health.

A leaf module (it imports nothing from kapell), so every package may use it, the dev cluster
included, whose layer sees only ``api``.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (another process may still take it first)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str,
    timeout_s: float = 60.0,
    interval_s: float = 0.05,
    process: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
) -> None:
    """Block until a GET of ``url`` answers 200; ``TimeoutError`` after ``timeout_s``, and
    ``RuntimeError`` at once if ``process`` (the server, when the caller started it) exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:g}s")
