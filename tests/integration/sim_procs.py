"""Start ``sim`` engine replicas and a gateway as real processes on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from kapell.net import free_port, wait_http

GATEWAY_SCRIPT = """
import sys
from kapell.gateway.app import create_app
from kapell.gateway.endpoints import StaticEndpointSource
from kapell.gateway.server import serve
name, port, urls = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
serve(create_app(StaticEndpointSource({name: urls})), "127.0.0.1", port)
"""


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
            wait_http(url + "/health")
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_http(gateway + "/v1/models")
        yield gateway
