"""The gateway in front of stub engines, called with the official openai client."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai

from conftest import Stack
from kapell.observe.access_log import AccessRecord


def client(stack: Stack, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def test_chat_completion_goes_through_and_is_metered(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    reply = client(stack).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert reply.choices[0].message.content == "tok " * 5
    assert reply.system_fingerprint == "a"
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    assert usage.requests == 1
    assert usage.generated_tokens == 5
    assert usage.in_flight == 0


def test_stream_arrives_chunk_by_chunk(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    chunks = list(
        client(stack).chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"t{i} " for i in range(6))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    assert usage.generated_tokens == 6


def test_completions_and_embeddings_and_models(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    api = client(stack)
    assert api.completions.create(model="tiny", prompt="x", max_tokens=2).choices[0].text
    assert api.embeddings.create(model="tiny", input="x").data[0].embedding == [0.0, 1.0]
    assert [m.id for m in api.models.list()] == ["tiny"]


def test_errors_use_openai_format(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(max_body_bytes=1000)
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    url = stack.url + "/v1/chat/completions"
    malformed = httpx.post(url, content=b"{not json")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    unknown = httpx.post(url, json={"model": "nope", "messages": []})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    assert httpx.post(url, content=b"x" * 2000).status_code == 413
    assert httpx.get(stack.url + "/v1/nowhere").json()["error"]["code"] == "not_found"
    try:
        client(stack).chat.completions.create(model="nope", messages=[])
    except openai.NotFoundError as error:
        assert "nope" in str(error)
    else:
        raise AssertionError("expected a 404")


def test_metrics_show_requests_and_tokens(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    client(stack).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    text = httpx.get(stack.url + "/metrics").text
    assert 'kapell_gateway_requests_total{code="200",model="tiny",tenant="anonymous"} 1.0' in text
    assert 'kapell_gateway_generated_tokens_total{model="tiny",tenant="anonymous"} 3.0' in text
    assert 'kapell_model_replicas_ready{model="tiny"} 1.0' in text


def test_a_client_that_hangs_up_after_done_is_served_not_gone(
    make_stack: Callable[..., Stack],
) -> None:
    """Many clients close the connection at ``[DONE]``, before the replica ends its stream:
    that request succeeded, and its tokens count (for quotas, autoscaling, the access log)."""
    records: list[AccessRecord] = []
    stack = make_stack()
    stack.gateway.access_log = records.append
    stack.set_endpoints("tiny", [stack.add_engine("a", linger_s=1.0)])
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    with httpx.stream("POST", stack.url + "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line == "data: [DONE]":
                break  # and hang up, while the replica's stream is still open
    deadline = time.monotonic() + 5
    while not records and time.monotonic() < deadline:
        time.sleep(0.05)
    [record] = records
    assert (record.status, record.generated_tokens, record.replica) == (200, 4, "tiny-0")
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    assert usage.generated_tokens == 4
    text = httpx.get(stack.url + "/metrics").text
    assert 'kapell_gateway_requests_total{code="200",model="tiny",tenant="anonymous"} 1.0' in text
