"""The OpenAI-compatible HTTP layer that every engine kapell ships serves.

``create_app(backend, served_name)`` returns a Starlette app with ``/v1/chat/completions``,
``/v1/completions``, ``/v1/embeddings``, ``/v1/models``, ``/health`` and ``/metrics``. The
backend (see :mod:`kapell.engines.openai_server.protocol`) only turns token ids into tokens;
this layer validates requests, applies the chat template and stop strings, frames SSE in
OpenAI's chunk format, reports ``usage`` and feeds the vLLM-named metrics, so all engines
answer the same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kapell.engines.openai_server.metrics import EngineMetrics
from kapell.engines.openai_server.protocol import (
    Backend,
    EmbeddingsUnsupportedError,
    FinishReason,
    GenerationRequest,
    SamplingParams,
)
from kapell.engines.openai_server.schema import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_request,
)
from kapell.engines.openai_server.stops import StopMatcher

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class _Choice:
    """One prompt to complete, and what its completion produced so far."""

    index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    text_parts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Delta:
    choice: _Choice
    text: str
    finished: bool


class _Server:
    """The request handlers, bound to one backend and one served model name."""

    def __init__(self, backend: Backend, served_name: str, registry: CollectorRegistry) -> None:
        self.backend = backend
        self.served_name = served_name
        self.registry = registry
        self.metrics = EngineMetrics(registry, served_name, backend.stats)
        self.created = int(time.time())

    # ---- plain endpoints -------------------------------------------------------------------

    async def health(self, _: Request) -> Response:
        status = 200 if self.backend.ready else 503
        return JSONResponse({"status": "ready" if status == 200 else "loading"}, status)

    async def metrics_text(self, _: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def models(self, _: Request) -> Response:
        card = {
            "id": self.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "kapell",
            "max_model_len": self.backend.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    # ---- generation ------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        body = parse_request(ChatCompletionRequest, await self._body(request))
        self._check_model(body.model)
        prompt = self.backend.render_chat(body.chat_messages())
        ids = self._prompt_ids(self.backend.encode(prompt), "messages")
        choice = _Choice(0, ids, self._sampling(body, body.token_limit(), len(ids)))
        stops = body.stop_strings()
        header = self._header("chatcmpl", "chat.completion")
        if body.stream:
            chunk_header = {**header, "object": "chat.completion.chunk"}
            return self._sse(
                self._chat_chunks(chunk_header, [choice], stops, body.include_usage_in_stream())
            )
        await self._complete([choice], stops)
        message = {"role": "assistant", "content": "".join(choice.text_parts)}
        return JSONResponse(
            {
                **header,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": choice.finish_reason,
                    }
                ],
                "usage": _usage([choice]),
            }
        )

    async def completions(self, request: Request) -> Response:
        body = parse_request(CompletionRequest, await self._body(request))
        self._check_model(body.model)
        choices = []
        for index, ids in enumerate(self._prompts(body.prompt)):
            checked = self._prompt_ids(ids, "prompt")
            params = self._sampling(body, body.token_limit(), len(checked))
            choices.append(_Choice(index, checked, params))
        stops = body.stop_strings()
        header = self._header("cmpl", "text_completion")
        if body.stream:
            return self._sse(
                self._completion_chunks(header, choices, stops, body.include_usage_in_stream())
            )
        await self._complete(choices, stops)
        return JSONResponse(
            {
                **header,
                "choices": [
                    {
                        "index": c.index,
                        "text": "".join(c.text_parts),
                        "logprobs": None,
                        "finish_reason": c.finish_reason,
                    }
                    for c in choices
                ],
                "usage": _usage(choices),
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body = parse_request(EmbeddingRequest, await self._body(request))
        self._check_model(body.model)
        if not self.backend.supports_embeddings:
            raise ApiError(
                400,
                f"model {self.served_name!r} does not support embeddings",
                code="embeddings_unsupported",
            )
        inputs = [self._prompt_ids(ids, "input") for ids in self._prompts(body.input)]
        try:
            vectors = await self.backend.embed(inputs)
        except EmbeddingsUnsupportedError as exc:
            raise ApiError(400, str(exc), code="embeddings_unsupported") from None
        tokens = sum(len(ids) for ids in inputs)
        self.metrics.prompt_tokens.inc(tokens)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode_vector(v, body.encoding_format),
            }
            for i, v in enumerate(vectors)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": self.served_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # ---- request checks --------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        if not self.backend.ready:
            raise ApiError(
                503,
                "the model is still loading",
                error_type="service_unavailable",
                code="model_loading",
            )
        return await request.body()

    def _check_model(self, model: str) -> None:
        if model != self.served_name:
            raise ApiError(
                404,
                f"The model `{model}` does not exist; this server serves `{self.served_name}`.",
                param="model",
                code="model_not_found",
            )

    def _prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        if isinstance(prompt, str):
            return [self.backend.encode(prompt)]
        if all(isinstance(p, int) for p in prompt):
            return [[p for p in prompt if isinstance(p, int)]]
        return [
            self.backend.encode(p) if isinstance(p, str) else p
            for p in prompt
            if not isinstance(p, int)
        ]

    def _prompt_ids(self, ids: list[int], param: str) -> list[int]:
        if not ids:
            raise ApiError(400, f"{param} is empty", param=param, code=f"bad_{param}")
        limit = self.backend.max_model_len
        if len(ids) >= limit:
            raise ApiError(
                400,
                f"{param} has {len(ids)} tokens; this model's context is {limit} tokens and "
                "must leave room for at least one generated token",
                param=param,
                code="context_length_exceeded",
            )
        vocab = self.backend.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise ApiError(
                400,
                f"{param} has token ids outside 0..{vocab - 1}",
                param=param,
                code=f"bad_{param}",
            )
        return ids

    def _sampling(
        self, body: ChatCompletionRequest | CompletionRequest, limit: int | None, prompt_len: int
    ) -> SamplingParams:
        room = self.backend.max_model_len - prompt_len
        if limit is not None and limit > room:
            raise ApiError(
                400,
                f"max_tokens is {limit} but the prompt has {prompt_len} tokens and this model's "
                f"context is {self.backend.max_model_len} tokens: at most {room} can be generated",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return SamplingParams(
            max_tokens=limit or room,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
        )

    def _header(self, id_prefix: str, obj: str) -> dict[str, Any]:
        return {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": obj,
            "created": int(time.time()),
            "model": self.served_name,
            "system_fingerprint": self.backend.system_fingerprint,
        }

    # ---- running the backend ---------------------------------------------------------------

    async def _generate(self, choice: _Choice, stops: Sequence[str]) -> AsyncIterator[str]:
        """Stream ``choice``'s text, applying stop strings and recording metrics."""
        arrived_s = time.monotonic()
        self.metrics.prompt_tokens.inc(len(choice.prompt_token_ids))
        request = GenerationRequest(uuid.uuid4().hex, choice.prompt_token_ids, choice.params)
        matcher = StopMatcher(stops)
        last_token_s: float | None = None
        async with aclosing(self.backend.generate(request)) as chunks:
            async for chunk in chunks:
                now_s = time.monotonic()
                if chunk.num_tokens:
                    if last_token_s is None:
                        self.metrics.ttft_s.observe(now_s - arrived_s)
                    else:
                        self.metrics.tpot_s.observe((now_s - last_token_s) / chunk.num_tokens)
                    last_token_s = now_s
                    choice.completion_tokens += chunk.num_tokens
                    self.metrics.generation_tokens.inc(chunk.num_tokens)
                text = matcher.feed(chunk.text)
                if matcher.stopped:
                    choice.finish_reason = "stop"
                elif chunk.finish_reason is not None:
                    choice.finish_reason = chunk.finish_reason
                    text += matcher.flush()
                if text:
                    choice.text_parts.append(text)
                    yield text
                if choice.finish_reason is not None:
                    break
        if choice.finish_reason is None:
            raise RuntimeError("the engine ended a generation without a finish reason")
        self.metrics.e2e_s.observe(time.monotonic() - arrived_s)
        self.metrics.request_finished(choice.finish_reason)

    async def _complete(self, choices: list[_Choice], stops: Sequence[str]) -> None:
        async def drain(choice: _Choice) -> None:
            async for _ in self._generate(choice, stops):
                pass

        await asyncio.gather(*(drain(c) for c in choices))

    async def _deltas(self, choices: list[_Choice], stops: Sequence[str]) -> AsyncIterator[_Delta]:
        """Interleave the streams of several choices, as their tokens arrive."""
        queue: asyncio.Queue[_Delta | BaseException] = asyncio.Queue()

        async def pump(choice: _Choice) -> None:
            try:
                async for text in self._generate(choice, stops):
                    await queue.put(_Delta(choice, text, finished=False))
                await queue.put(_Delta(choice, "", finished=True))
            except Exception as exc:
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(c)) for c in choices]
        try:
            remaining = len(choices)
            while remaining:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                remaining -= item.finished
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _chat_chunks(
        self,
        header: dict[str, Any],
        choices: list[_Choice],
        stops: Sequence[str],
        include_usage: bool,
    ) -> AsyncGenerator[dict[str, Any], None]:
        usage_field: dict[str, Any] = {"usage": None} if include_usage else {}
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
        yield {**header, "choices": [{**first, "finish_reason": None}], **usage_field}
        async for delta in self._deltas(choices, stops):
            if delta.finished:
                entry = {"index": delta.choice.index, "delta": {}, "logprobs": None}
                entry["finish_reason"] = delta.choice.finish_reason
            else:
                entry = {"index": delta.choice.index, "delta": {"content": delta.text}}
                entry |= {"logprobs": None, "finish_reason": None}
            yield {**header, "choices": [entry], **usage_field}
        if include_usage:
            yield {**header, "choices": [], "usage": _usage(choices)}

    async def _completion_chunks(
        self,
        header: dict[str, Any],
        choices: list[_Choice],
        stops: Sequence[str],
        include_usage: bool,
    ) -> AsyncGenerator[dict[str, Any], None]:
        usage_field: dict[str, Any] = {"usage": None} if include_usage else {}
        async for delta in self._deltas(choices, stops):
            entry = {
                "index": delta.choice.index,
                "text": delta.text,
                "logprobs": None,
                "finish_reason": delta.choice.finish_reason if delta.finished else None,
            }
            yield {**header, "choices": [entry], **usage_field}
        if include_usage:
            yield {**header, "choices": [], "usage": _usage(choices)}

    def _sse(self, chunks: AsyncGenerator[dict[str, Any], None]) -> Response:
        return StreamingResponse(
            _sse_frames(chunks), media_type="text/event-stream", headers=_SSE_HEADERS
        )


async def _sse_frames(chunks: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[str]:
    """OpenAI's framing: one ``data: {json}`` event per chunk, then ``data: [DONE]``.

    A failure after the response has started cannot change the status code any more, so it is
    sent as an ``error`` event, as OpenAI does.
    """
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
        except ApiError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
        except Exception as exc:
            error = ApiError(
                500, f"generation failed: {exc}", error_type="server_error", code="internal_error"
            )
            yield f"data: {json.dumps(error.body())}\n\n"
    yield "data: [DONE]\n\n"


def _usage(choices: Sequence[_Choice]) -> dict[str, int]:
    prompt = sum(len(c.prompt_token_ids) for c in choices)
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _encode_vector(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return list(vector)
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), exc.status_code)


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    error = ApiError(exc.status_code, str(exc.detail), code=code)
    return JSONResponse(error.body(), exc.status_code)


async def _server_error(_: Request, exc: Exception) -> Response:
    error = ApiError(
        500, f"internal error: {exc}", error_type="server_error", code="internal_error"
    )
    return JSONResponse(error.body(), 500)


def create_app(
    backend: Backend, served_name: str, registry: CollectorRegistry | None = None
) -> Starlette:
    """The OpenAI-compatible app for ``backend``, serving it as model ``served_name``.

    Metrics go to ``registry`` (a fresh one by default), so an engine can add its own series
    next to the shared ones. The app does not start or stop the backend: the launcher does, so
    that ``/health`` answers 503 while the model loads.
    """
    server = _Server(backend, served_name, registry or CollectorRegistry())
    routes = [
        Route("/health", server.health, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/embeddings", server.embeddings, methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
