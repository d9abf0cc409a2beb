"""A request from inside the gateway to its own routes, without a socket.

The vector stores embed through the gateway's own ``/v1/embeddings`` so that a store's
embeddings go the way any client's do: tenancy, the activator (scale from zero), routing,
retries and metering all apply.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message

from kapell.gateway.errors import GatewayError


async def post_json(
    app: ASGIApp, path: str, body: dict[str, Any], authorization: str | None
) -> dict[str, Any]:
    """POST ``body`` to ``app`` at ``path``; the JSON answer, or a ``GatewayError`` carrying
    the status, message and code of an error answer."""
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if authorization:
        headers.append((b"authorization", authorization.encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }  # fmt: skip
    sent = False
    answered = asyncio.Event()
    status = 500
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:  # the proxy watches for a disconnect: the caller stays until answered
            await answered.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    try:
        answer = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        answer = None
    if status == 200 and isinstance(answer, dict):
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        error = {"message": f"{path} answered HTTP {status}"}
    raise GatewayError(
        status if status >= 400 else 502,
        str(error.get("message")),
        type=str(error.get("type") or "invalid_request_error"),
        code=error.get("code"),
    )
