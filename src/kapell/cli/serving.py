"""Serving ASGI apps from kapell's long-running commands (``up``, ``operator``, ``gateway``).

Sockets are bound before anything else starts, so a port in use is one clear error instead of a
server that dies after the rest came up; the command, not uvicorn, handles signals.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from kapell.api.errors import BackendError
from kapell.gateway.server import uvicorn_config

GRACEFUL_SHUTDOWN_S = 5


class Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the command running it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int, what: str, option: str = "--port") -> socket.socket:
    """A listening, non-blocking socket on ``host:port`` (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BackendError(
            f"{what} cannot listen on {host}:{port} ({exc.strerror}); pass {option} with "
            "another number, or 0 for any"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def server(app: Any, sock: socket.socket) -> Server:
    """A server for ``app`` on ``sock`` with kapell's tuned settings (the socket sets the
    address); run it with ``serve(sockets=[sock])``."""
    host, _ = sock.getsockname()[:2]
    config = uvicorn_config(app, host, 0)
    config.timeout_graceful_shutdown = GRACEFUL_SHUTDOWN_S
    return Server(config)
