"""The reference engine's backend: a transformers model behind kapell's OpenAI server.

All torch work happens on one worker thread, so the event loop keeps answering (``/health``
says 503 while torch imports and the weights load). The worker runs a scheduler loop: it
admits waiting requests into the running :class:`~kapell.engines.reference.batch.DecodeBatch`
(up to ``max_num_seqs``), steps every running sequence with one forward pass, and hands each
new token to its request's asyncio queue. Requests that arrive while others decode join the
next step, so concurrent requests share forward passes.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram

from kapell.api import metrics as names
from kapell.engines.openai_server import (
    ChatMessage,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    render_chat_plainly,
)

if TYPE_CHECKING:
    from kapell.engines.reference.batch import DecodeBatch

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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


@dataclass(frozen=True)
class ReferenceOptions:
    """How to load and run the model."""

    model: str
    served_name: str
    device: str = "auto"
    dtype: str = "auto"
    max_num_seqs: int = 16
    threads: int | None = None


class ReferenceBackend:
    """A Hugging Face causal LM, continuously batched on a worker thread."""

    def __init__(self, options: ReferenceOptions, registry: CollectorRegistry) -> None:
        self._options = options
        self._inbox: queue.Queue[_Sequence | _EmbedJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._tokenizer: Any = None
        self._max_model_len = 0
        self._vocab_size = 0
        self._fingerprint = "kapell-reference"
        self._default_sampling = (1.0, 1.0)
        self._running = 0
        self._waiting = 0
        self._cache_usage = 0.0
        self._batch_size = Histogram(
            names.ENGINE_BATCH_SIZE,
            "Sequences stepped together in one decode forward pass.",
            ("model_name",),
            buckets=_BATCH_BUCKETS,
            registry=registry,
        ).labels(options.served_name)

    # ---- the protocol, on the event loop ----------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    @property
    def system_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def supports_embeddings(self) -> bool:
        return True

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
                batch = self._load()
            except BaseException as exc:
                loop.call_soon_threadsafe(report, exc)
                return
            self._loaded.set()
            loop.call_soon_threadsafe(report, None)
            self._serve(batch)

        self._thread = threading.Thread(target=work, name="kapell-reference", daemon=True)
        self._thread.start()
        await loaded

    async def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join, 10.0)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        if self._tokenizer.chat_template is None:
            return render_chat_plainly(messages)
        rendered: str = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return rendered

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

    def _load(self) -> DecodeBatch:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        import transformers

        from kapell.engines.reference.batch import DecodeBatch
        from kapell.engines.reference.loading import load_model

        if self._options.threads is not None:
            torch.set_num_threads(self._options.threads)
        loaded = load_model(self._options.model, self._options.device, self._options.dtype)
        self._tokenizer = loaded.tokenizer
        self._max_model_len = loaded.max_model_len
        self._vocab_size = loaded.vocab_size
        self._default_sampling = (loaded.default_temperature, loaded.default_top_p)
        self._fingerprint = (
            f"kapell-reference-transformers-{transformers.__version__}-{loaded.device.type}"
        )
        return DecodeBatch(loaded.model, loaded.device)

    def _serve(self, batch: DecodeBatch) -> None:
        from kapell.engines.reference.scheduler import Scheduler

        scheduler = Scheduler(
            batch,
            self._tokenizer,
            self._options.max_num_seqs,
            self._max_model_len,
            default_sampling=self._default_sampling,
        )
        while True:
            for item in self._take(block=not scheduler.busy):
                if item is None:
                    scheduler.abort(RuntimeError("the engine is shutting down"))
                    return
                if isinstance(item, _EmbedJob):
                    scheduler.embed(item.inputs, item.deliver)
                else:
                    scheduler.enqueue(item)
            try:
                stepped = scheduler.step()
            except Exception as exc:
                scheduler.abort(exc)
                stepped = 0
            if stepped:
                self._batch_size.observe(stepped)
            self._running, self._cache_usage = scheduler.running, scheduler.cache_usage
            self._waiting = scheduler.waiting + self._inbox.qsize()

    def _take(self, *, block: bool) -> list[_Sequence | _EmbedJob | None]:
        """Everything in the inbox; waits for the first item only when ``block``."""
        items = [self._inbox.get()] if block else []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items
