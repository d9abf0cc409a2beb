"""Span attributes of a finished request: OpenInference names, content only when asked."""

from __future__ import annotations

import json

from kapell.gateway.tracing import FinishedRequest, attributes, stream_text, traces_url

STREAM = (
    b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def finished(**changes: object) -> FinishedRequest:
    payload = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
               "prompt": {"id": "greet", "version": "2", "variables": {"name": "Ada"}}}  # fmt: skip
    request = FinishedRequest(
        "/v1/chat/completions", "chat", "team-a", 200, False, 1_000, 2_000, 0.01, 3, 5,
        "chat-1", payload, "greet", "2", json.dumps(payload).encode(), b'{"choices": []}', None,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def test_openinference_attributes_without_content_by_default() -> None:
    attrs = attributes(finished(), capture_content=False)
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["llm.model_name"] == "chat"
    assert (attrs["llm.token_count.prompt"], attrs["llm.token_count.completion"]) == (3, 5)
    assert attrs["llm.token_count.total"] == 8
    assert (attrs["prompt.id"], attrs["llm.prompt_template.version"]) == ("greet", "2")
    assert json.loads(attrs["llm.invocation_parameters"]) == {"model": "chat", "max_tokens": 5}
    assert not {"input.value", "output.value", "llm.prompt_template.variables"} & attrs.keys()


def test_content_when_asked_and_a_streams_text_joined() -> None:
    attrs = attributes(finished(stream=True, response_body=STREAM), capture_content=True)
    assert attrs["output.value"] == "Hello" and attrs["output.mime_type"] == "text/plain"
    assert json.loads(attrs["input.value"])["messages"][0]["content"] == "hi"
    assert json.loads(attrs["llm.prompt_template.variables"]) == {"name": "Ada"}
    embedding = attributes(finished(path="/v1/embeddings"), capture_content=False)
    assert embedding["openinference.span.kind"] == "EMBEDDING"


def test_stream_text_survives_a_cut_event_and_traces_url_takes_a_base_or_full_url() -> None:
    assert stream_text(STREAM[:-20]) == "Hello"
    assert stream_text(STREAM[:60]) == ""
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces/") == "http://collector:4318/v1/traces"
