"""A synchronous client for an ASGI app in tests, over httpx's own ASGI transport.

Not ``starlette.testclient``: since Starlette 1.x that module wants the ``httpx2`` package and,
given only ``httpx`` (all the ``dev`` extra installs), warns at import, which
``filterwarnings = error`` turns into a collection error. httpx's ``ASGITransport`` needs nothing
beyond ``httpx``. As with a ``TestClient`` used outside ``with``, each request runs in an event
loop of its own and the app's lifespan does not run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.types import ASGIApp


class AsgiClient:
    """``get``/``post``/``request`` against ``app`` in process; bodies are read in full."""

    def __init__(self, app: ASGIApp, raise_app_exceptions: bool = True) -> None:
        self._app = app
        self._raise = raise_app_exceptions

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=self._raise)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)
