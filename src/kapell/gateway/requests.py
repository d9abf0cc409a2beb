"""Reading an OpenAI request body: only the fields the gateway needs, checked strictly.

Everything else passes through to the replica untouched; the engine validates the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kapell.gateway.errors import GatewayError

CHARS_PER_TOKEN = 4
"""A tokenizer-free estimate, good enough to weigh requests for routing."""


@dataclass(frozen=True)
class ParsedRequest:
    """What routing, the activator and metering need from one request."""

    payload: dict[str, Any]
    model: str
    stream: bool
    prompt_text: str
    max_tokens: int | None

    @property
    def prompt_tokens_estimate(self) -> int:
        return len(self.prompt_text) // CHARS_PER_TOKEN + 1


MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have (OpenAI requests, tool
schemas included, stay far below it); deeper bodies are refused before anything walks them."""


def _bad(message: str, param: str | None = None) -> GatewayError:
    code = "invalid_request" if param is None else f"bad_{param}"
    return GatewayError(400, message, code=code, param=param)


def _too_deep() -> GatewayError:
    return _bad(f"request body is nested too deeply (the limit is {MAX_JSON_DEPTH} levels)")


def _nested_deeper_than(body: bytes, payload: dict[str, Any], limit: int) -> bool:
    """Whether ``payload`` (parsed from ``body``) nests arrays and objects more than ``limit``
    deep. Counting brackets in the raw bytes (strings included) bounds the depth from above,
    so most bodies are answered by two ``count`` calls; the rest are walked without recursion.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _check_token_limit(payload: dict[str, Any], field: str) -> int | None:
    """``payload[field]`` if absent or an integer >= 1; the engine's 400 otherwise (the same
    message, code and param as the engines kapell ships, and OpenAI's minimum of 1)."""
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{field}: Input should be a valid integer", field)
    if value < 1:
        raise _bad(f"{field}: Input should be greater than or equal to 1", field)
    return value


def _text_of(value: object) -> str:
    """The text inside a prompt, message content or embedding input (parts joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(item) for item in value)
    if isinstance(value, dict):
        text = value.get("text", value.get("content", ""))
        return text if isinstance(text, str) else _text_of(text)
    return ""


def _prompt_text(path: str, payload: dict[str, Any]) -> str:
    if path.endswith("/chat/completions"):
        messages = payload.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise _bad("'messages' must be a list of message objects", "messages")
        return "\n".join(f"{m.get('role', '')}: {_text_of(m.get('content'))}" for m in messages)
    field = "input" if path.endswith("/embeddings") else "prompt"
    value = payload.get(field)
    if not isinstance(value, str | list):
        raise _bad(f"'{field}' must be a string or a list", field)
    return _text_of(value)


def parse_request(path: str, body: bytes) -> ParsedRequest:
    """Parse and check ``body`` sent to ``path``; raise a 400 ``GatewayError`` if malformed."""
    try:
        payload = json.loads(body)
    except RecursionError:  # json's own limit: far deeper than MAX_JSON_DEPTH
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise _bad("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad("request body must be a JSON object")
    if _nested_deeper_than(body, payload, MAX_JSON_DEPTH):
        raise _too_deep()
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    max_tokens = _check_token_limit(payload, "max_tokens")
    max_completion_tokens = _check_token_limit(payload, "max_completion_tokens")
    if max_completion_tokens is not None:
        max_tokens = max_completion_tokens
    return ParsedRequest(
        payload=payload,
        model=model,
        stream=stream and not path.endswith("/embeddings"),
        prompt_text=_prompt_text(path, payload),
        max_tokens=max_tokens,
    )
