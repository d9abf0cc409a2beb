"""The upstream-client seam: the proxy exchange runs over any ``Upstream``, retries included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.asgi import AsgiClient

from kapell.gateway.app import Gateway
from kapell.gateway.endpoints import StaticEndpointSource

ANSWER = {
    "id": "cmpl-1",
    "object": "text_completion",
    "choices": [{"index": 0, "text": "hi", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


@dataclass
class _Reply:
    body: bytes
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "application/json"})

    @property
    def content(self) -> _Reply:
        return self

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self.body

    async def read(self) -> bytes:
        return self.body


class InMemoryUpstream:
    """Answers in process; URLs containing ``down`` fail as a refused connection would."""

    failures: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, object]]] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @asynccontextmanager
    async def post(self, url: str, body: bytes) -> AsyncIterator[_Reply]:
        self.posted.append((url, json.loads(body)))
        if "down" in url:
            raise ConnectionRefusedError(url)
        yield _Reply(json.dumps(ANSWER).encode())


def test_the_proxy_posts_through_the_upstream_it_is_given_and_retries_its_failures() -> None:
    upstream = InMemoryUpstream()
    source = StaticEndpointSource({"m": ["http://down:1", "http://up:2"]})
    gateway = Gateway(source, upstream=upstream)
    client = AsgiClient(gateway.app)
    for _ in range(2):
        reply = client.post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 2})
        assert reply.status_code == 200 and reply.json() == ANSWER
    urls = [url for url, _ in upstream.posted]
    assert urls.count("http://up:2/v1/completions") == 2
    assert set(urls) == {"http://down:1/v1/completions", "http://up:2/v1/completions"}
    usage = gateway.meter.snapshot("m")
    assert (usage.requests, usage.prompt_tokens, usage.generated_tokens) == (2, 6, 4)
