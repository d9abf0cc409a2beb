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


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request" if param is None else f"bad_{param}")


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
    except (ValueError, UnicodeDecodeError):
        raise _bad("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad("request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0
    ):
        raise _bad("'max_tokens' must be a non-negative integer", "max_tokens")
    return ParsedRequest(
        payload=payload,
        model=model,
        stream=stream and not path.endswith("/embeddings"),
        prompt_text=_prompt_text(path, payload),
        max_tokens=max_tokens,
    )
