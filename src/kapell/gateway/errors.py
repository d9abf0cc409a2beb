"""Error responses in OpenAI's shape, so every OpenAI client reports them usefully.

``{"error": {"message": ..., "type": ..., "param": null, "code": ...}}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from starlette.types import Send


@dataclass
class GatewayError(Exception):
    """A request the gateway answers itself with ``status`` and an OpenAI error body."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None
    """The request field at fault, if one is."""

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()

    def sse_event(self) -> bytes:
        """The error as a final server-sent event, for a stream that already started."""
        return b"data: " + self.body() + b"\n\n"


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Send a complete JSON response."""
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError) -> None:
    """Send ``error`` as a complete response."""
    await send_json(send, error.status, error.body(), error.headers)
