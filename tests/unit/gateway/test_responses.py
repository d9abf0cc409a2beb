"""OpenAI-shaped errors, usage read from engine responses, and error pages of the app."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st
from tests.asgi import AsgiClient

from kapell.api import Model
from kapell.api.replica import Endpoint
from kapell.gateway.app import Gateway
from kapell.gateway.endpoints import StaticEndpointSource
from kapell.gateway.errors import GatewayError
from kapell.gateway.proxy import _usage_from


def test_error_body_has_openai_shape() -> None:
    error = GatewayError(429, "slow down", type="rate_limit_exceeded", code="queue_full")
    assert json.loads(error.body()) == {
        "error": {"message": "slow down", "type": "rate_limit_exceeded", "param": None,
                  "code": "queue_full"}
    }  # fmt: skip
    assert error.sse_event() == b"data: " + error.body() + b"\n\n"


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.text(max_size=300), st.booleans())
def test_usage_is_read_from_any_engine_style_body(
    prompt: int, completion: int, content: str, spaced: bool
) -> None:
    payload = {"id": "x", "choices": [{"message": {"content": content}}],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion}}  # fmt: skip
    separators = (", ", ": ") if spaced else (",", ":")
    body = json.dumps(payload, separators=separators).encode()
    assert _usage_from(body) == (prompt, completion)


def test_usage_missing_null_or_broken_is_none() -> None:
    assert _usage_from(b'{"choices": []}') is None
    assert _usage_from(b'data: {"choices": [], "usage": null}\n\ndata: [DONE]\n\n') is None
    assert _usage_from(b'{"usage": {"prompt_tokens": "3"}}') is None
    assert _usage_from(b'{"usage": {"prompt_tok') is None


def test_stream_usage_is_the_last_usage_before_done() -> None:
    tail = (b'data: {"choices": [], "usage": null}\n\n'
            b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n\n'
            b"data: [DONE]\n\n")  # fmt: skip
    assert _usage_from(tail) == (5, 2)


class _BrokenSource(StaticEndpointSource):
    def model_names(self) -> Sequence[str]:
        raise RuntimeError("registry unavailable")

    def model(self, name: str) -> Model | None:
        raise RuntimeError("registry unavailable")

    def ready_endpoints(self, name: str) -> Sequence[Endpoint]:
        return ()


def test_wrong_method_is_an_openai_405_with_allow() -> None:
    client = AsgiClient(Gateway(StaticEndpointSource()).app)
    reply = client.get("/v1/chat/completions")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert reply.json()["error"]["code"] == "method_not_allowed"


def test_unknown_path_is_an_openai_404() -> None:
    reply = AsgiClient(Gateway(StaticEndpointSource()).app).post("/v2/nothing")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


def test_unexpected_failure_is_an_openai_500_not_plain_text() -> None:
    client = AsgiClient(Gateway(_BrokenSource()).app, raise_app_exceptions=False)
    for reply in (
        client.get("/v1/models"),
        client.post("/v1/chat/completions", json={"model": "m", "messages": []}),
    ):
        assert reply.status_code == 500
        assert reply.json()["error"]["type"] == "server_error"
