"""The backend protocol: what an engine must provide for kapell's shared OpenAI server.

Every server kapell ships (``reference`` over transformers, ``sim`` over a latency model) is this
one HTTP layer on top of a small backend, so request validation, SSE framing, ``usage``, errors,
stop strings and the vLLM-named metrics are written once and behave the same in every engine.

A backend is a plain object with these members (see :class:`Backend`):

``ready``
    ``True`` once the model is loaded. ``/health`` answers 200 only then, 503 before (as vLLM).
``system_fingerprint``
    Returned in every completion; the ``sim`` engine uses it to say its timings are simulated.
``max_model_len``
    Context length in tokens; prompt plus ``max_tokens`` must fit, else HTTP 400.
``vocab_size``
    Token ids in a prompt must be below it, else HTTP 400.
``supports_embeddings``
    Whether :meth:`Backend.embed` works; ``/v1/embeddings`` answers 400 otherwise.
``async start()`` / ``async stop()``
    Load and release the model. ``start`` runs while the server already answers ``/health``.
``encode(text) -> list[int]``
    Tokenization, used for the prompt and for ``usage``.
``render_chat(messages) -> str``
    The model's chat template applied with a generation prompt (:func:`render_chat_plainly`
    is a fallback for models without one).
``generate(request) -> AsyncGenerator[GenerationChunk, None]``
    Streams the completion of ``request.prompt_token_ids``. Each chunk carries the new text,
    how many tokens it took, and on the last chunk a ``finish_reason`` (``"stop"`` at end of
    sequence, ``"length"`` at ``max_tokens``). The server applies stop strings itself and
    closes the iterator early (``aclose``) when one matches or the client goes away, so a
    backend must free the sequence when its generator is closed.
``async embed(inputs) -> list[list[float]]``
    One vector per list of token ids.
``stats() -> EngineStats``
    Requests running and waiting, and the KV-cache use, read at every ``/metrics`` scrape.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatMessage:
    """One chat message with its content flattened to text."""

    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy; ``seed`` makes sampling repeatable.

    ``None`` means the request did not say: the engine's default applies (for a Hugging Face
    model, its generation config, as in vLLM; else 1.0).
    """

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt, already tokenized, and how to continue it."""

    request_id: str
    prompt_token_ids: Sequence[int]
    params: SamplingParams


@dataclass(frozen=True)
class GenerationChunk:
    """New text from one or more generated tokens; ``finish_reason`` is set on the last chunk."""

    text: str
    num_tokens: int = 1
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class EngineStats:
    """Load that the engine reports at every metrics scrape."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float = 0.0
    """Fraction of the KV cache in use, 0..1 (vLLM's ``gpu_cache_usage_perc``)."""


class EmbeddingsUnsupportedError(Exception):
    """Raised by :meth:`Backend.embed` when the engine cannot embed."""


class Backend(Protocol):
    """What an engine provides to :func:`kapell.engines.openai_server.create_app`."""

    @property
    def ready(self) -> bool: ...

    @property
    def system_fingerprint(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def supports_embeddings(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def encode(self, text: str) -> list[int]: ...

    def render_chat(self, messages: Sequence[ChatMessage]) -> str: ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]: ...

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]: ...

    def stats(self) -> EngineStats: ...


def render_chat_plainly(messages: Sequence[ChatMessage]) -> str:
    """A chat template for models without one: ``role: content`` lines, then ``assistant:``."""
    lines = [f"{m.role}: {m.content}" for m in messages]
    return "\n".join([*lines, "assistant:"])
