"""Start ``sim`` engine replicas and a gateway as real processes on free loopback ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx

GATEWAY_SCRIPT = """
import sys
from kapell.gateway.app import create_app
from kapell.gateway.endpoints import StaticEndpointSource
from kapell.gateway.server import serve
name, port, urls = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
serve(create_app(StaticEndpointSource({name: urls})), "127.0.0.1", port)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout_s: float = 30.0, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url}{path} not healthy after {timeout_s}s")


def sim_engine_args(profile: str, name: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kapell.engines.sim", "--model", profile, "--served-name", name,
            "--host", "127.0.0.1", "--port", str(port), *extra]  # fmt: skip


@contextmanager
def processes(commands: Sequence[Sequence[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen(list(c), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in commands
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


@contextmanager
def sim_cluster(profile: str, name: str, replicas: int, *extra: str) -> Iterator[str]:
    """``replicas`` sim engines behind a gateway; yields the gateway's base URL."""
    engine_ports = [free_port() for _ in range(replicas)]
    gateway_port = free_port()
    urls = [f"http://127.0.0.1:{p}" for p in engine_ports]
    commands = [sim_engine_args(profile, name, p, *extra) for p in engine_ports]
    commands.append([sys.executable, "-c", GATEWAY_SCRIPT, name, str(gateway_port), *urls])
    with processes(commands):
        for url in urls:
            wait_healthy(url)
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_healthy(gateway, path="/v1/models")
        yield gateway
