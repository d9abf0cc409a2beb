"""The onnx engine's backend: an exported decoder in ONNX Runtime behind kapell's OpenAI server.

The same shape as the reference engine's backend: all model work happens on one worker thread
(onnxruntime is imported there, so ``/health`` says 503 while it loads), which runs a scheduler
loop that admits waiting requests into the running batch (up to ``max_num_seqs``), steps every
running sequence with one run of the graph, and hands each new token to its request's asyncio
queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

from kapell.api import metrics as names
from kapell.engines.onnx.batch import DecodeBatch
from kapell.engines.onnx.loading import LoadedModel, load_model
from kapell.engines.onnx.scheduler import Scheduler
from kapell.engines.openai_server import (
    ChatMessage,
    EmbeddingsUnsupportedError,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
)

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
class OnnxOptions:
    """How to load and run the model."""

    model: str
    served_name: str
    max_num_seqs: int = 16
    threads: int | None = None


class OnnxBackend:
    """An exported causal LM, continuously batched on a worker thread."""

    def __init__(self, options: OnnxOptions, registry: CollectorRegistry) -> None:
        self._options = options
        self._inbox: queue.Queue[_Sequence | _EmbedJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._model: LoadedModel | None = None
        self._fingerprint = "kapell-onnx"
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
    def _loaded_model(self) -> LoadedModel:
        if self._model is None:
            raise RuntimeError("the model is not loaded yet")
        return self._model

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    @property
    def system_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def max_model_len(self) -> int:
        return 0 if self._model is None else self._model.max_model_len

    @property
    def vocab_size(self) -> int:
        return 0 if self._model is None else self._model.vocab_size

    @property
    def supports_embeddings(self) -> bool:
        return self._model is not None and self._model.graph.has_hidden_state

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
                self._model = load_model(self._options.model, self._options.threads)
            except BaseException as exc:
                loop.call_soon_threadsafe(report, exc)
                return
            self._fingerprint = f"kapell-onnx-onnxruntime-{self._model.onnxruntime_version}-cpu"
            self._loaded.set()
            loop.call_soon_threadsafe(report, None)
            self._serve(self._model)

        self._thread = threading.Thread(target=work, name="kapell-onnx", daemon=True)
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
        if not self.supports_embeddings:
            raise EmbeddingsUnsupportedError("this ONNX graph has no last_hidden_state output")
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

    def _serve(self, model: LoadedModel) -> None:
        scheduler = Scheduler(
            DecodeBatch(model.session, model.graph),
            model.tokenizer,
            model.tokenizer.eos_token_id,
            self._options.max_num_seqs,
            model.max_model_len,
            default_sampling=(model.default_temperature, model.default_top_p),
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
