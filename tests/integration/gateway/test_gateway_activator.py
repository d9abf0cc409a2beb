"""Scale from zero and overload: the activator queues, releases in order, refuses politely."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import openai
from stub_engine import StubEngine

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


REASON = "engine 'vllm' needs 'vllm' on PATH; install it or choose another engine"


def test_a_model_that_cannot_start_is_refused_at_once_and_not_retried(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()  # the default activation timeout: 300 s

    def cannot_start() -> None:
        stack.source.add_model(external_model("tiny", ""))
        stack.source.set_unavailable("tiny", REASON)

    stack.loop_thread.call(cannot_start)
    api = openai.OpenAI(base_url=stack.url + "/v1", api_key="none")  # default retries (2)
    started = time.monotonic()
    try:
        api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as error:
        elapsed = time.monotonic() - started
        assert error.status_code == 503
        assert error.code == "model_cannot_start"
        assert isinstance(error.body, dict)
        assert error.body["message"] == f"model 'tiny' cannot start: {REASON}"
        assert "retry-after" not in error.response.headers
        assert error.response.headers["x-should-retry"] == "false"
    else:
        raise AssertionError("expected a 503")
    assert elapsed < 1.0, f"answered after {elapsed:.2f}s"
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'kapell_gateway_requests_total{code="503",model="tiny",tenant="anonymous"} 1.0' in (
        metrics
    ), "the openai client sent the request once"


def test_held_requests_are_released_with_the_reason_once_the_model_cannot_start(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()  # the default activation timeout: 300 s
    stack.loop_thread.call(lambda: stack.source.add_model(external_model("tiny", "")))

    def on_capacity_request(model: str) -> None:  # the platform tries, and fails, to start one
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, stack.source.set_unavailable, model, REASON)

    stack.source._on_capacity_request = on_capacity_request
    started = time.monotonic()
    results = asyncio.run(_chat_all(stack.url, 50))
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"held requests answered after {elapsed:.1f}s"
    assert all(isinstance(r, openai.APIStatusError) and r.status_code == 503 for r in results)
    assert all(REASON in r.message for r in results if isinstance(r, openai.APIStatusError))
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    assert (usage.in_flight, usage.queue_depth) == (0, 0)

    # Once the platform can start it again (spec or machine fixed), requests are held and served.
    async def recovered() -> None:
        stack.source.set_unavailable("tiny", None)
        await asyncio.sleep(0.3)
        url = await stack.loop_thread.start_server(StubEngine("a").app)
        stack.source.set_endpoints("tiny", [url])

    stack.source._on_capacity_request = lambda model: asyncio.get_running_loop().create_task(
        recovered()
    )
    stack.loop_thread.call(lambda: stack.source.set_unavailable("tiny", None))
    after = asyncio.run(_chat_all(stack.url, 5))
    assert not [r for r in after if isinstance(r, Exception)]
