"""A stand-in OpenAI engine for gateway tests: a small Starlette app on a real socket.

It is not the ``sim`` engine: it answers instantly (or after ``token_delay_s`` per streamed
token), records every request body it received (to prove nothing was lost or sent twice),
and names itself in ``system_fingerprint`` so tests see which replica answered. Run as a
script for tests that need a process they can kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class StubEngine:
    """The stand-in engine's state and app."""

    def __init__(
        self, name: str, *, token_delay_s: float = 0.0, tokens: int = 4, linger_s: float = 0.0
    ) -> None:
        self.name = name
        self.token_delay_s = token_delay_s
        self.linger_s = linger_s
        """How long a stream stays open after its ``[DONE]`` (as a busy engine's may)."""
        self.tokens = tokens
        self.received: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._complete, methods=["POST"]),
                Route("/v1/completions", self._complete, methods=["POST"]),
                Route("/v1/embeddings", self._embed, methods=["POST"]),
            ]
        )

    def _usage(self, payload: dict[str, Any], generated: int) -> dict[str, int]:
        prompt = len(json.dumps(payload.get("messages", payload.get("prompt", "")))) // 4 + 1
        return {"prompt_tokens": prompt, "completion_tokens": generated,
                "total_tokens": prompt + generated}  # fmt: skip

    async def _complete(self, request: Request) -> Response:
        payload = await request.json()
        self.received.append(payload)
        generated = min(int(payload.get("max_tokens") or self.tokens), 64)
        chat = request.url.path.endswith("/chat/completions")
        if payload.get("stream"):
            return StreamingResponse(
                self._events(payload, generated, chat), media_type="text/event-stream"
            )
        text = "tok " * generated
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s * generated)
        return JSONResponse(
            {
                "id": f"cmpl-{len(self.received)}",
                "object": "chat.completion" if chat else "text_completion",
                "created": 0,
                "model": payload["model"],
                "system_fingerprint": self.name,
                "choices": [choice],
                "usage": self._usage(payload, generated),
            }
        )

    async def _events(
        self, payload: dict[str, Any], generated: int, chat: bool
    ) -> AsyncIterator[bytes]:
        base = {"id": "chunk", "created": 0, "model": payload["model"],
                "system_fingerprint": self.name,
                "object": "chat.completion.chunk" if chat else "text_completion"}  # fmt: skip
        for i in range(generated):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            choice = (
                {"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}
                if chat
                else {"index": 0, "text": f"t{i} ", "finish_reason": None}
            )
            yield b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": self._usage(payload, generated)}
            yield b"data: " + json.dumps(usage).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
        if self.linger_s:
            await asyncio.sleep(self.linger_s)

    async def _embed(self, request: Request) -> Response:
        payload = await request.json()
        self.received.append(payload)
        return JSONResponse(
            {
                "object": "list",
                "model": payload["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="stub")
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=4)
    args = parser.parse_args()
    engine = StubEngine(args.name, token_delay_s=args.token_delay_s, tokens=args.tokens)
    uvicorn.run(engine.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
