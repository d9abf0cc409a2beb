"""Reading OpenAI request bodies: the fields the gateway needs, strict 400s, token estimates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapell.gateway.errors import GatewayError
from kapell.gateway.requests import CHARS_PER_TOKEN, MAX_JSON_DEPTH, parse_request

CHAT = "/v1/chat/completions"


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_chat_request_fields_and_prompt_text() -> None:
    request = parse_request(
        CHAT,
        _body(model="m", stream=True, max_tokens=7,
              messages=[{"role": "system", "content": "be brief"},
                        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    )  # fmt: skip
    assert (request.model, request.stream, request.max_tokens) == ("m", True, 7)
    assert request.prompt_text == "system: be brief\nuser: hi"


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    request = parse_request(CHAT, _body(model="m", messages=[], max_tokens=3,
                                        max_completion_tokens=9))  # fmt: skip
    assert request.max_tokens == 9


def test_completions_and_embeddings_read_their_own_field() -> None:
    assert parse_request("/v1/completions", _body(model="m", prompt=["a", "b"])).prompt_text == (
        "a\nb"
    )
    embedding = parse_request("/v1/embeddings", _body(model="m", input="x", stream=True))
    assert embedding.prompt_text == "x"
    assert embedding.stream is False, "embeddings never stream"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (CHAT, b"{not json", "invalid_request"),
        (CHAT, b"\xff\xfe", "invalid_request"),
        (CHAT, b"[1, 2]", "invalid_request"),
        (CHAT, _body(messages=[]), "bad_model"),
        (CHAT, _body(model="", messages=[]), "bad_model"),
        (CHAT, _body(model="m", messages=[], stream="yes"), "bad_stream"),
        (CHAT, _body(model="m", messages=[], max_tokens=-1), "bad_max_tokens"),
        (CHAT, _body(model="m", messages=[], max_tokens=0), "bad_max_tokens"),
        (CHAT, _body(model="m", messages=[], max_completion_tokens=0), "bad_max_completion_tokens"),
        (
            CHAT,
            _body(model="m", messages=[], max_tokens=0, max_completion_tokens=5),
            "bad_max_tokens",
        ),
        (CHAT, _body(model="m", messages=[], max_tokens=True), "bad_max_tokens"),
        (CHAT, _body(model="m", messages=[], max_tokens=1.5), "bad_max_tokens"),
        (CHAT, _body(model="m", messages="hi"), "bad_messages"),
        (CHAT, _body(model="m", messages=["hi"]), "bad_messages"),
        ("/v1/completions", _body(model="m", prompt=3), "bad_prompt"),
        ("/v1/embeddings", _body(model="m"), "bad_input"),
    ],
)
def test_malformed_bodies_are_400s_naming_the_field(path: str, body: bytes, code: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_request(path, body)
    assert caught.value.status == 400
    assert caught.value.code == code
    error = json.loads(caught.value.body())["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


@given(st.text(max_size=2000))
def test_token_estimate_is_chars_over_four_plus_one(prompt: str) -> None:
    request = parse_request("/v1/completions", _body(model="m", prompt=prompt))
    assert request.prompt_tokens_estimate == len(prompt) // CHARS_PER_TOKEN + 1


@given(st.text(max_size=500), st.text(max_size=500))
def test_token_estimate_grows_with_the_prompt(head: str, tail: str) -> None:
    short = parse_request("/v1/completions", _body(model="m", prompt=head))
    longer = parse_request("/v1/completions", _body(model="m", prompt=head + tail))
    assert longer.prompt_tokens_estimate >= short.prompt_tokens_estimate


def _nested(depth: int, opener: str) -> bytes:
    """A chat body whose extra field nests ``depth`` levels in all (the body itself is one)."""
    inner = (
        "[" * (depth - 1) + "]" * (depth - 1)
        if opener == "["
        else ('{"a":' * (depth - 1) + "1" + "}" * (depth - 1))
    )
    return f'{{"model": "m", "messages": [], "x": {inner}}}'.encode()


@pytest.mark.parametrize("opener", ["[", "{"])
def test_nesting_up_to_the_limit_passes_and_one_more_level_is_a_400(opener: str) -> None:
    assert parse_request(CHAT, _nested(MAX_JSON_DEPTH, opener)).model == "m"
    for depth in (MAX_JSON_DEPTH + 1, 1000, 100_000):
        with pytest.raises(GatewayError) as caught:
            parse_request(CHAT, _nested(depth, opener))
        assert (caught.value.status, caught.value.code) == (400, "invalid_request")
        assert "nested too deeply" in caught.value.message


def test_many_brackets_without_depth_pass() -> None:
    """The bracket count only bounds the depth; wide bodies are walked and pass."""
    body = _body(model="m", messages=[{"role": "user", "content": "[[[{{{"}] * 200)
    assert parse_request(CHAT, body).model == "m"
