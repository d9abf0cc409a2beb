"""The routes that take a ``prompt`` object: chat completions, Responses, and feedback.

``PromptedChat`` sits in front of the chat-completions ``ProxyRoute``: a body without a
``prompt`` goes through untouched (one substring test); one with
``"prompt": {"id", "version"?, "variables"?}`` gets the chosen version rendered as its first
message and is sent to that version's Model. ``Responses`` is a minimal ``POST /v1/responses``
(OpenAI's Responses API, not streamed): ``instructions``, the rendered prompt and ``input``
become chat messages for the same ``ProxyRoute``, and its answer becomes a Response object.
Either way the request then takes the ordinary path (tenancy, activator, balancer, metering)
and is counted for its prompt version; the answer carries ``x-kapell-prompt-version``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from kapell.gateway.errors import GatewayError, send_error, send_json
from kapell.gateway.prompts import PromptRef, Selection
from kapell.gateway.proxy import ClientGone, ProxyRoute, _header, _read_body, _usage_from
from kapell.gateway.vectors.retrieval import with_retrieved_context

if TYPE_CHECKING:
    from kapell.gateway.app import Gateway

VERSION_HEADER = b"x-kapell-prompt-version"
USER_HEADER = b"x-kapell-user"
"""Who the caller is, for a sticky canary split, when the body has no ``user``."""

_ID = re.compile(rb'"id"\s*:\s*"([^"]+)"')


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def _user(payload: dict[str, Any], scope: Scope) -> str | None:
    for field in ("user", "safety_identifier"):
        if isinstance(payload.get(field), str) and payload[field]:
            return str(payload[field])
    return _header(scope, USER_HEADER)


class _Observed:
    """A ``send`` that tags the answer with the prompt version and notes what it needs to
    count it: the status, the usage near the end, and the response id near the start."""

    def __init__(self, send: Send, version: int) -> None:
        self._send = send
        self._version = str(version).encode()
        self.status = 499  # nothing sent: the client left
        self.head = self.previous = self.tail = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [*message.get("headers", ()), (VERSION_HEADER, self._version)]
            message = {**message, "headers": headers}
        else:
            body = message.get("body", b"")
            if body:
                self.head = self.head or body[:4096]
                self.previous, self.tail = self.tail, body
        await self._send(message)

    def response_id(self) -> str | None:
        match = _ID.search(self.head)
        return match.group(1).decode() if match else None


async def _forward(
    gateway: Gateway,
    chat: ProxyRoute,
    scope: Scope,
    receive: Receive,
    send: Send,
    selection: Selection | None,
    payload: dict[str, Any],
) -> _Observed | None:
    """Send ``payload`` through the chat-completions route; count it for its version."""
    body = json.dumps(payload).encode()
    if selection is None:
        await chat(scope, receive, send, body)
        return None
    number = selection.version.version
    observed = _Observed(send, number)
    started_s = time.perf_counter()
    await chat(scope, receive, observed, body, selection.observed())
    usage = _usage_from(observed.previous + observed.tail) or (0, 0)
    gateway.prompts.record(
        selection.key, selection.name, number, observed.status,
        time.perf_counter() - started_s, *usage, selection.slow_s,
    )  # fmt: skip
    response_id = observed.response_id()
    if observed.status == 200 and response_id is not None:
        gateway.prompts.remember(response_id, selection.name, number)
    return observed


async def _select(gateway: Gateway, payload: dict[str, Any], scope: Scope) -> Selection:
    """The version the caller gets, rendered; a version that retrieves has the chunks its
    vector store finds for the query put into its context variable first."""
    ref = PromptRef.parse(payload.pop("prompt"))
    selection = gateway.prompts.select(ref, _user(payload, scope))
    retrieval = selection.version.retrieval
    if retrieval is None:
        return selection
    if gateway.vectors is None:
        raise GatewayError(
            400,
            f"prompt '{ref.name}' retrieves from vector store '{retrieval.vector_store}', but "
            "this gateway serves no vector stores",
            code="vector_store_not_found",
        )
    authorization = _header(scope, b"authorization")
    variables = await with_retrieved_context(
        ref.variables, retrieval, gateway.vectors, authorization, ref.name
    )
    return gateway.prompts.rendered(selection, variables)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad("request body must be a JSON object")
    return payload


class _PromptRoute:
    """A route in front of the chat-completions ``ProxyRoute`` (``chat``), which it hands
    the body it read (and, for a prompt, rewrote)."""

    def __init__(self, gateway: Gateway, chat: ProxyRoute) -> None:
        self._gateway = gateway
        self._chat = chat

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        config = self._gateway.config
        return await _read_body(receive, scope, config.max_body_bytes, config.body_timeout_s)


class PromptedChat(_PromptRoute):
    """``POST /v1/chat/completions``, with the ``prompt`` extension."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self._gateway
        try:
            body = await self._body(scope, receive)
            payload = _with_prompt(body)
            if payload is not None:
                gateway.tenants.authenticate(_header(scope, b"authorization"))
                selection = await _select(gateway, payload, scope)
                messages = payload.get("messages", [])
                if not isinstance(messages, list):
                    raise _bad("'messages' must be a list of message objects", "messages")
                rendered = {"role": selection.version.role, "content": selection.text}
                payload["messages"] = [rendered, *messages]
                payload["model"] = selection.version.model
        except GatewayError as error:
            await send_error(send, error)
            return
        except ClientGone:
            return
        if payload is None:
            await self._chat(scope, receive, send, body)
        else:
            await _forward(gateway, self._chat, scope, receive, send, selection, payload)


def _with_prompt(body: bytes) -> dict[str, Any] | None:
    """The request, if it has a ``prompt``; None for any other body (the chat route answers
    it as usual, a malformed one included)."""
    if b'"prompt"' not in body:
        return None
    try:
        payload = _json_object(body)
    except GatewayError:
        return None
    return payload if "prompt" in payload else None


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if all(isinstance(p, str) for p in parts) and len(parts) == len(content):
            return "\n".join(str(p) for p in parts)
    raise _bad("'input' content must be a string or a list of text parts", "input")


def _input_messages(value: object) -> list[dict[str, str]]:
    """``input`` as chat messages: a string is one user message; a list holds messages."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad("'input' must be a string or a list of messages", "input")
    messages = []
    for item in value:
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise _bad("'input' items must be messages (other item types are not supported)",
                       "input")  # fmt: skip
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise _bad(f"'input' message role must be user, assistant, system or developer, "
                       f"got {role!r}", "input")  # fmt: skip
        messages.append({"role": str(role), "content": _content_text(item.get("content"))})
    return messages


_PASSED = {"temperature": "temperature", "top_p": "top_p", "user": "user",
           "max_output_tokens": "max_tokens"}  # fmt: skip
"""Responses fields with a chat-completions equivalent (Responses name: chat name)."""


class Responses(_PromptRoute):
    """``POST /v1/responses``: a Response from one chat completion (no streaming, no tools)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self._gateway
        try:
            body = await self._body(scope, receive)
            gateway.tenants.authenticate(_header(scope, b"authorization"))
            payload = _json_object(body)
            if payload.get("stream"):
                raise _bad("streaming is not supported on /v1/responses; use "
                           "/v1/chat/completions with stream", "stream")  # fmt: skip
            echoed = payload.get("prompt")
            chat, selection = await self._chat_request(payload, scope)
        except GatewayError as error:
            await send_error(send, error)
            return
        except ClientGone:
            return
        captured = _Captured()
        await _forward(gateway, self._chat, scope, receive, captured, selection, chat)
        if captured.status != 200:
            await send_json(send, captured.status, captured.body, captured.version_header())
            return
        response = _response(json.loads(captured.body), payload, echoed)
        if selection is not None:
            gateway.prompts.remember(response["id"], selection.name, selection.version.version)
        await send_json(send, 200, json.dumps(response).encode(), captured.version_header())

    async def _chat_request(
        self, payload: dict[str, Any], scope: Scope
    ) -> tuple[dict[str, Any], Selection | None]:
        messages: list[dict[str, str]] = []
        instructions = payload.get("instructions")
        if isinstance(instructions, str) and instructions:
            messages.append({"role": "system", "content": instructions})
        selection = None
        if payload.get("prompt") is not None:
            selection = await _select(self._gateway, payload, scope)
            messages.append({"role": selection.version.role, "content": selection.text})
            model: object = selection.version.model
        else:
            model = payload.get("model")
            if not isinstance(model, str) or not model:
                raise _bad("'model' must be a non-empty string (or give a 'prompt')", "model")
        messages += _input_messages(payload.get("input"))
        if not messages:
            raise _bad("nothing to send: give 'input', 'instructions' or a 'prompt'", "input")
        chat = {"model": model, "messages": messages}
        chat |= {to: payload[of] for of, to in _PASSED.items() if payload.get(of) is not None}
        return chat, selection


class _Captured:
    """A ``send`` that keeps the whole (non-streamed) answer."""

    def __init__(self) -> None:
        self.status = 499
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        else:
            self.body += message.get("body", b"")

    def version_header(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.headers if k == VERSION_HEADER}


def _response(
    completion: dict[str, Any], request: dict[str, Any], prompt: object
) -> dict[str, Any]:
    """A Responses API object for one chat completion."""
    choice = (completion.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = completion.get("usage") or {}
    prompt_tokens, generated = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    truncated = choice.get("finish_reason") == "length"
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": completion.get("created", int(time.time())),
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None,
        "model": completion.get("model", ""),
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "prompt": prompt,
        "text": {"format": {"type": "text"}},
        "metadata": {},
        "usage": {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": generated,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + generated,
        },
    }


async def feedback(request: Request) -> Response:
    """``POST /v1/prompts/{name}/feedback``: ``{"response_id" or "version", "score": 0..1}``."""
    gateway: Gateway = request.app.state.gateway
    name = request.path_params["name"]
    try:
        tenant = gateway.tenants.authenticate(request.headers.get("authorization"))
        try:
            body = await request.json()
        except ValueError:
            raise _bad("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _bad("request body must be a JSON object")
        version = gateway.prompts.feedback(name, body, tenant.may_use)
    except GatewayError as error:
        return Response(error.body(), error.status, error.headers, "application/json")
    return JSONResponse(
        {"object": "prompt.feedback", "prompt": name, "version": version, "score": body["score"]}
    )
