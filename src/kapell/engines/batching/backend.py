"""kapell's backend protocol over a continuously batched model, on one worker thread.

All model work happens on the worker thread, so the event loop keeps answering: the engine's
``load`` runs there too (its runtime is imported there, so ``/health`` says 503 while it
loads). Then the thread runs a scheduler loop: it admits waiting requests into the running
batch (up to ``max_num_seqs``), steps every running sequence with one forward pass, and hands
each new token to its request's asyncio queue. Requests that arrive while others decode join
the next step, so concurrent requests share forward passes.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram

from kapell.api import metrics as names
from kapell.engines.batching.batch import DecodeBatch, Sampler
from kapell.engines.batching.scheduler import Scheduler
from kapell.engines.openai_server import (
    ChatMessage,
    EmbeddingsUnsupportedError,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
)

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Tokenizer(Protocol):
    """The model's tokenizer as the backend uses it (``render_chat`` applies its template)."""

    @property
    def eos_token_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str: ...

    def render_chat(self, messages: Sequence[ChatMessage]) -> str: ...


@dataclass(frozen=True)
class BatchedModel:
    """What an engine's ``load`` returns: its model as a batch, and what to serve it with."""

    batch: DecodeBatch[Any]
    sampler: Callable[[int | None], Sampler[Any]]
    """A request's sampler from its seed (``None``: a random one)."""
    tokenizer: Tokenizer
    max_model_len: int
    vocab_size: int
    default_sampling: tuple[float, float]
    """(temperature, top_p) for requests that give none: the model's generation config."""
    system_fingerprint: str
    no_embeddings: str | None = None
    """Why this model cannot embed, or ``None`` if it can."""


@dataclass
class _Sequence:
    """A request between the event loop and the worker thread."""

    request: GenerationRequest
    deliver: Callable[[GenerationChunk | BaseException], None]
    cancelled: bool = False


@dataclass
class _EmbedJob:
    inputs: Sequence[Sequence[int]]
    deliver: Callable[[list[list[float]] | BaseException], None]


def add_batching_arguments(parser: argparse.ArgumentParser, *, threads_help: str) -> None:
    """``--max-num-seqs`` and ``--threads``, which every batching engine takes."""
    parser.add_argument(
        "--max-num-seqs", type=int, default=16, help="most sequences decoded together"
    )
    parser.add_argument("--threads", type=int, help=threads_help)


class BatchingBackend:
    """A model that ``load`` makes on the worker thread, continuously batched there."""

    def __init__(
        self,
        load: Callable[[], BatchedModel],
        *,
        served_name: str,
        max_num_seqs: int,
        registry: CollectorRegistry,
        name: str,
    ) -> None:
        """``name`` names the worker thread, and is the fingerprint until the model loads."""
        self._load = load
        self._name = name
        self._max_num_seqs = max_num_seqs
        self._inbox: queue.Queue[_Sequence | _EmbedJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._model: BatchedModel | None = None
        self._running = 0
        self._waiting = 0
        self._cache_usage = 0.0
        self._batch_size = Histogram(
            names.ENGINE_BATCH_SIZE,
            "Sequences stepped together in one decode forward pass.",
            ("model_name",),
            buckets=_BATCH_BUCKETS,
            registry=registry,
        ).labels(served_name)

    # ---- the protocol, on the event loop ----------------------------------------------------

    @property
    def _loaded_model(self) -> BatchedModel:
        if self._model is None:
            raise RuntimeError("the model is not loaded yet")
        return self._model

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    @property
    def system_fingerprint(self) -> str:
        return self._name if self._model is None else self._model.system_fingerprint

    @property
    def max_model_len(self) -> int:
        return 0 if self._model is None else self._model.max_model_len

    @property
    def vocab_size(self) -> int:
        return 0 if self._model is None else self._model.vocab_size

    @property
    def supports_embeddings(self) -> bool:
        return self._model is not None and self._model.no_embeddings is None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()

        def report(error: BaseException | None) -> None:
            if not loaded.done():
                if error is None:
                    loaded.set_result(None)
                else:
                    loaded.set_exception(error)

        def work() -> None:
            try:
                self._model = model = self._load()
            except BaseException as exc:
                loop.call_soon_threadsafe(report, exc)
                return
            self._loaded.set()
            loop.call_soon_threadsafe(report, None)
            self._serve(model)

        self._thread = threading.Thread(target=work, name=self._name, daemon=True)
        self._thread.start()
        await loaded

    async def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join, 10.0)

    def encode(self, text: str) -> list[int]:
        return self._loaded_model.tokenizer.encode(text)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return self._loaded_model.tokenizer.render_chat(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def deliver(item: GenerationChunk | BaseException) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, item)

        sequence = _Sequence(request, deliver)
        self._inbox.put(sequence)
        try:
            while True:
                item = await chunks.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # The worker frees the row at its next step; no effect if it already finished.
            sequence.cancelled = True

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        reason = self._loaded_model.no_embeddings
        if reason is not None:
            raise EmbeddingsUnsupportedError(reason)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[list[list[float]]] = loop.create_future()

        def settle(item: list[list[float]] | BaseException) -> None:
            if isinstance(item, BaseException):
                result.set_exception(item)
            else:
                result.set_result(item)

        def deliver(item: list[list[float]] | BaseException) -> None:
            loop.call_soon_threadsafe(settle, item)

        self._inbox.put(_EmbedJob(inputs, deliver))
        return await result

    def stats(self) -> EngineStats:
        return EngineStats(self._running, self._waiting, self._cache_usage)

    # ---- the worker thread -----------------------------------------------------------------

    def _serve(self, model: BatchedModel) -> None:
        scheduler = Scheduler(
            model.batch,
            model.sampler,
            model.tokenizer,
            model.tokenizer.eos_token_id,
            self._max_num_seqs,
            model.max_model_len,
            default_sampling=model.default_sampling,
        )
        while True:
            for item in self._take(block=not scheduler.busy):
                if item is None:
                    scheduler.abort(RuntimeError("the engine is shutting down"))
                    return
                if isinstance(item, _EmbedJob):
                    _embed(model.batch, item)
                else:
                    scheduler.enqueue(item)
            try:
                stepped = scheduler.step()
            except Exception as exc:
                scheduler.abort(exc)
                stepped = 0
            if stepped:
                self._batch_size.observe(stepped)
            # The cache first: a scrape that sees no sequence running sees their cache freed.
            self._cache_usage = scheduler.cache_usage
            self._running = scheduler.running
            self._waiting = scheduler.waiting + self._inbox.qsize()

    def _take(self, *, block: bool) -> list[_Sequence | _EmbedJob | None]:
        """Everything in the inbox; waits for the first item only when ``block``."""
        items = [self._inbox.get()] if block else []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items


def _embed(batch: DecodeBatch[Any], job: _EmbedJob) -> None:
    try:
        vectors = batch.embed(job.inputs)
    except Exception as exc:
        job.deliver(exc)
        return
    job.deliver(vectors)
