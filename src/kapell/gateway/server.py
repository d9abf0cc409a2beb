"""Serving the gateway app with uvicorn (uvloop, httptools) from a command or a benchmark."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp


def uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """The uvicorn settings kapell serves with: uvloop, httptools, no access log, and no
    X-Forwarded-* rewriting (``proxy_headers``: a middleware on every request that the
    gateway, which reads no client address, does not need)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=30,
    )


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Run ``app`` until interrupted (blocks; starts its own uvloop event loop)."""
    server = uvicorn.Server(uvicorn_config(app, host, port))
    server.run()
