"""The shared OpenAI server layer, driven in-process over a scripted backend."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest
from tests.asgi import AsgiClient

from kapell.engines.openai_server import (
    ChatMessage,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    create_app,
    render_chat_plainly,
)

SCRIPT = "To be, or not to be: that is the question."
MODEL = "scripted"


class ScriptedBackend:
    """Answers every prompt with SCRIPT, one character per token; tokens are code points."""

    system_fingerprint = "fp_scripted"
    max_model_len = 128
    vocab_size = 0x110000

    def __init__(self, *, ready: bool = True, embeddings: bool = True) -> None:
        self.ready = ready
        self.supports_embeddings = embeddings
        self.requests: list[GenerationRequest] = []
        self.closed_early = 0

    async def start(self) -> None:
        self.ready = True

    async def stop(self) -> None:
        self.ready = False

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return render_chat_plainly(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.requests.append(request)
        limit = request.params.max_tokens
        finished = False
        try:
            for i, char in enumerate(SCRIPT[:limit]):
                last = i == min(limit, len(SCRIPT)) - 1
                reason = None if not last else ("length" if limit <= len(SCRIPT) else "stop")
                finished = last
                yield GenerationChunk(char, 1, reason)
        finally:
            if not finished:
                self.closed_early += 1

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        return [[float(len(ids)), float(sum(ids)) / 1000] for ids in inputs]

    def stats(self) -> EngineStats:
        return EngineStats(num_running=2, num_waiting=1, kv_cache_usage=0.25)


def _client(backend: ScriptedBackend | None = None) -> AsgiClient:
    return AsgiClient(create_app(backend or ScriptedBackend(), MODEL))


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}


def _events(body: str) -> list[str]:
    """The data of each SSE event, checking the framing on the way."""
    assert body.endswith("\n\n")
    events = body[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


def test_health_is_503_while_loading_and_200_when_ready() -> None:
    backend = ScriptedBackend(ready=False)
    client = _client(backend)
    assert client.get("/health").status_code == 503
    assert client.post("/v1/chat/completions", json=_chat()).status_code == 503
    backend.ready = True
    assert client.get("/health").status_code == 200


def test_models_lists_the_served_name() -> None:
    data = _client().get("/v1/models").json()
    assert [m["id"] for m in data["data"]] == [MODEL]
    assert data["data"][0]["max_model_len"] == ScriptedBackend.max_model_len


def test_chat_completion_has_text_usage_and_fingerprint() -> None:
    backend = ScriptedBackend()
    reply = _client(backend).post("/v1/chat/completions", json=_chat(max_tokens=5)).json()
    assert reply["object"] == "chat.completion"
    assert reply["system_fingerprint"] == "fp_scripted"
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": SCRIPT[:5]}
    assert choice["finish_reason"] == "length"
    prompt = render_chat_plainly([ChatMessage("user", "Hi")])
    assert reply["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": 5,
        "total_tokens": len(prompt) + 5,
    }
    assert list(backend.requests[0].prompt_token_ids) == [ord(c) for c in prompt]


def test_sampling_parameters_reach_the_backend() -> None:
    backend = ScriptedBackend()
    body = _chat(max_completion_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    _client(backend).post("/v1/chat/completions", json=body)
    params = backend.requests[0].params
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (7, 0.5, 0.9, 3)


def test_unset_sampling_is_left_to_the_engine() -> None:
    backend = ScriptedBackend()
    _client(backend).post("/v1/chat/completions", json=_chat())
    params = backend.requests[0].params
    assert (params.temperature, params.top_p, params.seed) == (None, None, None)


def test_default_max_tokens_fills_the_context() -> None:
    backend = ScriptedBackend()
    _client(backend).post("/v1/completions", json={"model": MODEL, "prompt": "abc"})
    assert backend.requests[0].params.max_tokens == ScriptedBackend.max_model_len - 3


def test_end_of_sequence_finishes_with_stop() -> None:
    reply = _client().post("/v1/completions", json={"model": MODEL, "prompt": "x"}).json()
    assert reply["choices"][0]["text"] == SCRIPT
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_stop_string_cuts_the_text_and_releases_the_sequence() -> None:
    backend = ScriptedBackend()
    reply = _client(backend).post("/v1/chat/completions", json=_chat(stop=["not", "zzz"])).json()
    choice = reply["choices"][0]
    assert choice["message"]["content"] == "To be, or "
    assert choice["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == len("To be, or not")
    assert backend.closed_early == 1


def test_streamed_chat_matches_the_plain_one_and_ends_with_done() -> None:
    client = _client()
    plain = client.post("/v1/chat/completions", json=_chat(max_tokens=12)).json()
    events = _events(
        client.post("/v1/chat/completions", json=_chat(max_tokens=12, stream=True)).text
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all("usage" not in c for c in chunks)


def test_stream_usage_comes_in_a_last_chunk_without_choices() -> None:
    body = _chat(max_tokens=4, stream=True, stream_options={"include_usage": True})
    chunks = [
        json.loads(e) for e in _events(_client().post("/v1/chat/completions", json=body).text)[:-1]
    ]
    *rest, last = chunks
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in rest)


def test_completions_with_several_prompts_stream_every_choice() -> None:
    body = {"model": MODEL, "prompt": ["a", "bb"], "max_tokens": 3, "stream": True}
    chunks = [
        json.loads(e) for e in _events(_client().post("/v1/completions", json=body).text)[:-1]
    ]
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert "".join(c["text"] for c in mine) == SCRIPT[:3]
        assert mine[-1]["finish_reason"] == "length"


def test_completions_accept_token_ids_and_count_them() -> None:
    body = {"model": MODEL, "prompt": [[65, 66], [67]], "max_tokens": 2}
    reply = _client().post("/v1/completions", json=body).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    assert reply["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", _chat(model="nope"), 404, "model"),
        ("/v1/chat/completions", _chat(n=2), 400, "n"),
        ("/v1/chat/completions", _chat(temperature=3), 400, "temperature"),
        ("/v1/chat/completions", _chat(top_p=0), 400, "top_p"),
        ("/v1/chat/completions", _chat(max_tokens=0), 400, "max_tokens"),
        ("/v1/chat/completions", _chat(max_tokens=10_000), 400, "max_tokens"),
        ("/v1/chat/completions", _chat(stop=[""]), 400, "stop"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
        ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "x" * 500}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": [-1]}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "echo": True}, 400, "echo"),
        ("/v1/embeddings", {"model": MODEL}, 400, "input"),
    ],
)
def test_bad_requests_get_openai_errors(
    path: str, body: dict[str, Any], status: int, param: str
) -> None:
    response = _client().post(path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"]
    assert error["param"].split(".")[0] == param
    assert error["code"] in (f"bad_{param}", "model_not_found", "context_length_exceeded")


def test_malformed_json_is_a_400() -> None:
    response = _client().post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "invalid_request"


def test_unknown_route_is_an_openai_style_404() -> None:
    response = _client().get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_embeddings_in_float_and_base64_agree() -> None:
    client = _client()
    body = {"model": MODEL, "input": ["ab", "c"]}
    floats = client.post("/v1/embeddings", json=body).json()
    packed = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    for plain, encoded in zip(floats["data"], packed["data"], strict=True):
        raw = base64.b64decode(encoded["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert decoded == pytest.approx(plain["embedding"])
    assert floats["data"][0]["embedding"] == [2.0, (97 + 98) / 1000]


def test_embeddings_unsupported_is_a_400() -> None:
    client = _client(ScriptedBackend(embeddings=False))
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert response.status_code == 400


def test_metrics_use_vllm_names_and_count_tokens() -> None:
    client = _client()
    client.post("/v1/completions", json={"model": MODEL, "prompt": "abcd", "max_tokens": 6})
    client.post("/v1/completions", json={"model": MODEL, "prompt": "ef", "max_tokens": 3})
    text = client.get("/metrics").text
    assert f'vllm:prompt_tokens_total{{model_name="{MODEL}"}} 6.0' in text
    assert f'vllm:generation_tokens_total{{model_name="{MODEL}"}} 9.0' in text
    assert f'vllm:num_requests_running{{model_name="{MODEL}"}} 2.0' in text
    assert f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 1.0' in text
    assert f'vllm:gpu_cache_usage_perc{{model_name="{MODEL}"}} 0.25' in text
    assert 'vllm:request_success_total{finished_reason="length"' in text
    assert f'vllm:time_to_first_token_seconds_count{{model_name="{MODEL}"}} 2.0' in text
    assert f'vllm:e2e_request_latency_seconds_count{{model_name="{MODEL}"}} 2.0' in text
