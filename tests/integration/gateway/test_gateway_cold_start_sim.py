"""Scale from zero with a real ``sim`` engine process behind the gateway.

The model starts with no replica; 200 concurrent streamed requests (the official ``openai``
client) make the gateway ask for capacity, which spawns a ``sim`` replica with a 2 s cold
start. Every request must be answered, and each exactly once (the replica's own request
counter). How fast the first tokens came is measured by ``kapell bench gateway``, not here.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai

from kapell.bench.gateway import MODEL
from kapell.bench.gateway_coldstart import ColdStartResult, scale_from_zero

REQUESTS = 200


async def _run() -> ColdStartResult:
    clients: dict[str, openai.AsyncOpenAI] = {}
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=REQUESTS + 10), timeout=120
    ) as http:

        async def stream_one(url: str, i: int) -> tuple[str, float]:
            api = clients.get(url)
            if api is None:
                api = clients[url] = openai.AsyncOpenAI(
                    base_url=url + "/v1", api_key="none", http_client=http, max_retries=0
                )
            stream = await api.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=4,
                stream=True,
            )
            first: tuple[str, float] | None = None
            async for chunk in stream:
                if first is None:
                    first = (chunk.id, time.monotonic())
            assert first is not None, "a stream with no chunk"
            return first

        return await scale_from_zero(cold_start_s=2.0, requests=REQUESTS, stream_one=stream_one)


def test_scale_from_zero_with_a_sim_replica_loses_and_duplicates_nothing() -> None:
    result = asyncio.run(_run())
    assert result.failures == []
    assert len(set(result.response_ids)) == REQUESTS
    assert result.engine_requests == REQUESTS, "each request reached the replica exactly once"
    assert result.ready_s >= result.cold_start_s, "the replica really started cold"
