"""Scale from zero and overload: the activator queues, releases in order, refuses politely."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import openai

from conftest import Stack
from kapell.gateway.endpoints import external_model


async def _chat_all(url: str, count: int, max_tokens: int = 4) -> list[object]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=count + 10),
                                 timeout=60) as http:  # fmt: skip
        api = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", http_client=http,
                                 max_retries=0)  # fmt: skip

        async def one(i: int) -> object:
            try:
                return await api.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": f"request-{i}"}],
                    max_tokens=max_tokens,
                )
            except openai.APIStatusError as error:
                return error

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_scale_from_zero_under_200_concurrent_requests(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    cold_start_s = 1.0
    started: list[float] = []

    async def cold_start() -> None:
        await asyncio.sleep(cold_start_s)
        url = await stack.loop_thread.start_server(stack.engines["a"].app)
        stack.source.set_endpoints("tiny", [url])

    def on_capacity_request(model: str) -> None:
        if not started:
            started.append(time.monotonic())
            asyncio.get_running_loop().create_task(cold_start())

    stack.loop_thread.call(lambda: stack.source.add_model(external_model("tiny", "")))
    stack.source._on_capacity_request = on_capacity_request
    from stub_engine import StubEngine

    stack.engines["a"] = StubEngine("a")
    results = asyncio.run(_chat_all(stack.url, 200))
    failures = [r for r in results if isinstance(r, Exception)]
    assert failures == []
    seen = Counter(p["messages"][0]["content"] for p in stack.engines["a"].received)
    assert seen == Counter(f"request-{i}" for i in range(200)), "each request exactly once"
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    assert (usage.requests, usage.in_flight, usage.queue_depth) == (200, 0, 0)
    assert stack.source.capacity_requests["tiny"] >= 1


def test_waiting_too_long_is_a_503_that_says_so(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(activation_timeout_s=0.2)
    stack.loop_thread.call(lambda: stack.source.add_model(external_model("tiny", "")))
    reply = httpx.post(stack.url + "/v1/chat/completions",
                       json={"model": "tiny", "messages": []})  # fmt: skip
    assert reply.status_code == 503
    assert "no free ready replica" in reply.json()["error"]["message"]
    assert "retry-after" in reply.headers


def test_overload_gives_429s_never_5xx_and_recovers(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(max_in_flight_per_replica=2, queue_max_per_model=4)
    stack.set_endpoints("tiny", [stack.add_engine("a", token_delay_s=0.02)])
    results = asyncio.run(_chat_all(stack.url, 60, max_tokens=5))
    statuses = Counter(200 if not isinstance(r, Exception) else r.status_code for r in results)
    assert statuses[429] > 0 and statuses[200] >= 6
    assert set(statuses) <= {200, 429}
    rejected = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert rejected[0].response.headers["retry-after"] == "1"
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    assert (usage.in_flight, usage.queue_depth) == (0, 0)
    after = asyncio.run(_chat_all(stack.url, 5, max_tokens=1))
    assert not [r for r in after if isinstance(r, Exception)], "recovers once load drops"
