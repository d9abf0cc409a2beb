"""How the gateway reaches a replica: the upstream-client seam (as httpx has transports).

The proxy (``gateway.proxy``) posts a request body to a replica URL and reads the answer whole
or chunk by chunk; it needs nothing more, so that is all ``Upstream`` asks. Production uses
``AiohttpUpstream``, one shared aiohttp session with pooled keep-alive connections; aiohttp's
own response objects satisfy ``UpstreamResponse``, so the seam adds no object per request. A
test or an embedding can pass another ``Upstream`` to ``Gateway``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp

from kapell.gateway.config import GatewayConfig

_JSON_HEADERS = {"content-type": "application/json"}


class UpstreamBody(Protocol):
    """A response body read as it arrives."""

    def iter_any(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    """A replica's answer."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> UpstreamBody: ...

    async def read(self) -> bytes: ...


class Upstream(Protocol):
    """Posts JSON bodies to replicas. ``failures``: the exceptions that mean the replica (or
    the way to it) failed, which the proxy retries on another replica."""

    @property
    def failures(self) -> tuple[type[BaseException], ...]: ...

    def post(self, url: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class AiohttpUpstream:
    """One aiohttp session for every replica (opened by ``start``, inside the event loop)."""

    failures: tuple[type[BaseException], ...] = (
        aiohttp.ClientError,
        TimeoutError,
        ConnectionError,
    )

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self._config.upstream_connect_timeout_s,
                sock_read=self._config.upstream_read_timeout_s,
            )
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def post(self, url: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        if self._session is None:
            raise RuntimeError("gateway not started: run the app with its lifespan")
        return self._session.post(url, data=body, headers=_JSON_HEADERS)
