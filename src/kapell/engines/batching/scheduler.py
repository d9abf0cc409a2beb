"""The scheduler: which sequences run, one batched step at a time.

Each :meth:`Scheduler.step` drops cancelled sequences, admits waiting ones up to
``max_num_seqs`` (prefilled together, which also yields their first token), then decodes one
token for every running sequence in a single forward pass of the engine's
:class:`~kapell.engines.batching.batch.DecodeBatch`. It runs on the worker thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol

from kapell.engines.batching.batch import DecodeBatch, L, Row, Sampler
from kapell.engines.batching.detokenize import Decoder, IncrementalDetokenizer
from kapell.engines.openai_server import GenerationChunk, GenerationRequest


class Submitted(Protocol):
    """A request as the scheduler sees it: the request, a way to answer, a cancel flag."""

    request: GenerationRequest
    cancelled: bool

    def deliver(self, item: GenerationChunk | BaseException) -> None: ...


@dataclass
class _Running(Generic[L]):
    """A sequence in the batch and its sampling state."""

    sequence: Submitted
    detokenizer: IncrementalDetokenizer
    sample: Sampler[L]
    generated: int = 0


class Scheduler(Generic[L]):
    """Waiting and running sequences of one model."""

    def __init__(
        self,
        batch: DecodeBatch[L],
        sampler: Callable[[int | None], Sampler[L]],
        tokenizer: Decoder,
        eos_token_id: int | None,
        max_num_seqs: int,
        max_len: int,
        *,
        default_sampling: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        """``sampler(seed)`` makes a request's sampler; ``default_sampling`` is the
        (temperature, top_p) for requests that give none."""
        self._batch = batch
        self._sampler = sampler
        self._tokenizer = tokenizer
        self._max_num_seqs = max_num_seqs
        self._capacity_tokens = max_num_seqs * max_len
        self._eos = set() if eos_token_id is None else {eos_token_id}
        self._waiting: deque[Submitted] = deque()
        self._running: dict[int, _Running[L]] = {}
        self._next_key = 0
        self._default_temperature, self._default_top_p = default_sampling

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def cache_usage(self) -> float:
        return self._batch.cache_tokens / self._capacity_tokens

    def enqueue(self, sequence: Submitted) -> None:
        self._waiting.append(sequence)

    def step(self) -> int:
        """Admit and decode once; how many sequences the decode forward pass carried."""
        self._retire({k for k, r in self._running.items() if r.sequence.cancelled})
        self._waiting = deque(s for s in self._waiting if not s.cancelled)
        self._admit()
        if not self._batch.rows:
            return 0
        rows = list(self._batch.rows)
        self._emit(rows, self._batch.step())
        return len(rows)

    def abort(self, error: BaseException) -> None:
        """Fail every waiting and running sequence, e.g. after a failed forward pass."""
        for sequence in [*self._waiting, *(r.sequence for r in self._running.values())]:
            sequence.deliver(error)
        self._waiting.clear()
        self._retire(set(self._running))

    def _retire(self, keys: set[int]) -> None:
        self._batch.remove(keys)
        for key in keys:
            del self._running[key]

    def _admit(self) -> None:
        room = self._max_num_seqs - len(self._running)
        admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if not admitted:
            return
        rows = []
        for sequence in admitted:
            key, self._next_key = self._next_key, self._next_key + 1
            rows.append(Row(key=key, length=len(sequence.request.prompt_token_ids)))
            self._running[key] = _Running(
                sequence,
                IncrementalDetokenizer(self._tokenizer),
                self._sampler(sequence.request.params.seed),
            )
        prompts = [list(s.request.prompt_token_ids) for s in admitted]
        self._emit(rows, self._batch.admit(rows, prompts))

    def _emit(self, rows: list[Row], logits: Iterable[L]) -> None:
        """Sample each row's next token, send its text, and retire the rows that finished."""
        finished = set()
        for row, row_logits in zip(rows, logits, strict=True):
            running = self._running[row.key]
            params = running.sequence.request.params
            temperature = (
                self._default_temperature if params.temperature is None else params.temperature
            )
            top_p = self._default_top_p if params.top_p is None else params.top_p
            token = running.sample(row_logits, temperature, top_p)
            running.generated += 1
            if token in self._eos:
                chunk = GenerationChunk("", 1, "stop")
            else:
                text = running.detokenizer.add(token)
                done = running.generated >= params.max_tokens
                chunk = GenerationChunk(text, 1, "length" if done else None)
            row.next_token = token
            if chunk.finish_reason is not None:
                finished.add(row.key)
            running.sequence.deliver(chunk)
        self._retire(finished)
