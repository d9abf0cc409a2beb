"""Continuous batching: the shared scheduler and backend, and what each engine plugs into them.

The scheduler and the backend run here over a batch without a model. Each engine's
``DecodeBatch`` must give a sequence inside a batch (joining late, padded on the left, with a
neighbour leaving) the logits it gets alone: the onnx engine's on the committed export of the
tiny Shakespeare model, the reference engine's on a randomly initialised two-layer GPT-2 (on
CUDA too where a GPU is present). Each engine's sampler must be greedy at temperature 0, keep
the nucleus, and repeat itself for a seed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from kapell.engines.batching import (
    BatchedModel,
    BatchingBackend,
    DecodeBatch,
    IncrementalDetokenizer,
    Row,
    Sampler,
    Scheduler,
)
from kapell.engines.openai_server import (
    ChatMessage,
    EmbeddingsUnsupportedError,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
    render_chat_plainly,
)

MODEL_DIR = Path(__file__).resolve().parents[3] / "examples/models/tiny-shakespeare"
STEPS = 10

# ---- the shared scheduler and backend, over a batch without a model ---------------------------


class _CountingBatch:
    """Each row's "logits" is the token it must draw next: its length, modulo 26."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    @property
    def cache_tokens(self) -> int:
        return len(self.rows) * max((r.length for r in self.rows), default=0)

    def admit(self, rows: list[Row], prompts: list[list[int]]) -> list[int]:
        self.rows.extend(rows)
        return [r.length % 26 for r in rows]

    def step(self) -> list[int]:
        for row in self.rows:
            row.length += 1
        return [r.length % 26 for r in self.rows]

    def remove(self, keys: set[int]) -> None:
        self.rows = [r for r in self.rows if r.key not in keys]

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        return [[float(len(ids))] for ids in inputs]


class _Letters:
    """Token ``i`` is the ``i``-th lowercase letter; ``z`` (25) ends a sequence."""

    eos_token_id = 25

    def encode(self, text: str) -> list[int]:
        return [ord(c) - ord("a") for c in text]

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str:
        return "".join(chr(ord("a") + i) for i in token_ids)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return render_chat_plainly(messages)


@dataclass
class _Submitted:
    request: GenerationRequest
    cancelled: bool = False
    received: list[GenerationChunk | BaseException] = field(default_factory=list)

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        self.received.append(item)

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.received if isinstance(c, GenerationChunk))


def _submitted(prompt_length: int, max_tokens: int, **sampling: float) -> _Submitted:
    params = SamplingParams(max_tokens, **sampling)  # type: ignore[arg-type]
    return _Submitted(GenerationRequest("r", list(range(prompt_length)), params))


def _scheduler(
    batch: _CountingBatch, max_num_seqs: int = 4, seen: list[tuple[float, float]] | None = None
) -> Scheduler[int]:
    def sampler(seed: int | None) -> Sampler[int]:
        def sample(logits: int, temperature: float, top_p: float) -> int:
            if seen is not None:
                seen.append((temperature, top_p))
            return logits

        return sample

    return Scheduler(batch, sampler, _Letters(), 25, max_num_seqs, 64, default_sampling=(0.8, 0.95))


def test_sequences_end_at_max_tokens_or_at_the_end_of_sequence_token() -> None:
    batch = _CountingBatch()
    scheduler = _scheduler(batch)
    short, ending = _submitted(1, max_tokens=3), _submitted(23, max_tokens=10)
    scheduler.enqueue(short)
    scheduler.enqueue(ending)
    assert [scheduler.step(), scheduler.step(), scheduler.step()] == [2, 2, 0]
    assert short.text == "bcd" and short.received[-1] == GenerationChunk("d", 1, "length")
    assert ending.text == "xy" and ending.received[-1] == GenerationChunk("", 1, "stop")
    assert not scheduler.busy and batch.rows == [] and scheduler.cache_usage == 0.0


def test_at_most_max_num_seqs_run_and_a_cancelled_sequence_makes_room() -> None:
    batch = _CountingBatch()
    scheduler = _scheduler(batch, max_num_seqs=2)
    first, second, third = (_submitted(1, max_tokens=20) for _ in range(3))
    for sequence in (first, second, third):
        scheduler.enqueue(sequence)
    assert scheduler.step() == 2
    assert (scheduler.running, scheduler.waiting, third.received) == (2, 1, [])
    assert scheduler.cache_usage == 2 * 2 / (2 * 64)
    first.cancelled = True
    delivered = len(first.received)
    assert scheduler.step() == 2
    assert (scheduler.running, scheduler.waiting, len(first.received)) == (2, 0, delivered)
    assert third.text == "bc"


def test_abort_fails_the_waiting_and_the_running() -> None:
    batch = _CountingBatch()
    scheduler = _scheduler(batch, max_num_seqs=1)
    running, waiting = _submitted(1, max_tokens=20), _submitted(1, max_tokens=20)
    scheduler.enqueue(running)
    scheduler.enqueue(waiting)
    scheduler.step()
    error = RuntimeError("the forward pass failed")
    scheduler.abort(error)
    assert running.received[-1] is error and waiting.received == [error]
    assert not scheduler.busy and batch.rows == []


def test_unset_sampling_takes_the_defaults() -> None:
    seen: list[tuple[float, float]] = []
    scheduler = _scheduler(_CountingBatch(), seen=seen)
    scheduler.enqueue(_submitted(1, max_tokens=1))
    scheduler.enqueue(_submitted(1, max_tokens=1, temperature=0.0, top_p=0.5))
    scheduler.step()
    assert seen == [(0.8, 0.95), (0.0, 0.5)]


def test_the_backend_serves_what_its_loader_makes_on_the_worker_thread() -> None:
    def load(no_embeddings: str | None = None) -> BatchedModel:
        return BatchedModel(
            batch=_CountingBatch(),
            sampler=lambda seed: lambda logits, temperature, top_p: int(logits),
            tokenizer=_Letters(),
            max_model_len=64,
            vocab_size=26,
            default_sampling=(1.0, 1.0),
            system_fingerprint="kapell-counting-1",
            no_embeddings=no_embeddings,
        )

    def backend(loader: Callable[[], BatchedModel]) -> BatchingBackend:
        return BatchingBackend(
            loader, served_name="m", max_num_seqs=4, registry=CollectorRegistry(), name="kapell-x"
        )

    async def scenario() -> None:
        served = backend(load)
        assert not served.ready and served.system_fingerprint == "kapell-x"
        await served.start()
        assert served.ready and served.system_fingerprint == "kapell-counting-1"
        assert (served.max_model_len, served.vocab_size, served.supports_embeddings) == (
            64,
            26,
            True,
        )
        assert served.encode("abc") == [0, 1, 2]
        request = GenerationRequest("r", [0, 1], SamplingParams(max_tokens=3))
        chunks = [chunk async for chunk in served.generate(request)]
        assert "".join(c.text for c in chunks) == "cde" and chunks[-1].finish_reason == "length"
        assert await served.embed([[1, 2], [3]]) == [[2.0], [1.0]]
        assert served.stats().num_running == 0
        await served.stop()

        no_vectors = backend(lambda: load(no_embeddings="no hidden states"))
        await no_vectors.start()
        assert not no_vectors.supports_embeddings
        with pytest.raises(EmbeddingsUnsupportedError, match="no hidden states"):
            await no_vectors.embed([[1]])
        await no_vectors.stop()

        def fail() -> BatchedModel:
            raise FileNotFoundError("no weights")

        broken = backend(fail)
        with pytest.raises(FileNotFoundError, match="no weights"):
            await broken.start()
        assert not broken.ready

    asyncio.run(scenario())


class _BytesTokenizer:
    """Each token is one byte of UTF-8; incomplete characters decode to U+FFFD."""

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


def test_detokenizer_holds_back_incomplete_characters() -> None:
    detok = IncrementalDetokenizer(_BytesTokenizer())
    pieces = [detok.add(b) for b in "aé!".encode()]
    assert pieces == ["a", "", "é", "!"]


def test_the_onnx_engine_never_imports_torch() -> None:
    pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")
    script = f"""
import sys
import kapell.engines.onnx.__main__
from kapell.engines.onnx.backend import OnnxOptions, _load
assert not {{"torch", "transformers", "numpy", "onnxruntime"}} & set(sys.modules), "at import"
_load(OnnxOptions({str(MODEL_DIR)!r}, "tiny", threads=1))
assert not {{"torch", "transformers"}} & set(sys.modules), "after loading"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


# ---- each engine's DecodeBatch and sampler ------------------------------------------------------


@dataclass(frozen=True)
class _Engine:
    new_batch: Callable[[], DecodeBatch[Any]]
    vocab: int  # prompt tokens are drawn below it (no special tokens)


def _onnx_engine() -> _Engine:
    pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")
    pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
    from kapell.engines.onnx.batch import DecodeBatch as OnnxBatch
    from kapell.engines.onnx.loading import load_model

    loaded = load_model(str(MODEL_DIR), threads=1)
    return _Engine(lambda: OnnxBatch(loaded.session, loaded.graph), loaded.vocab_size - 2)


def _reference_engine(device: str) -> _Engine:
    torch = pytest.importorskip("torch", reason="the reference engine needs torch")
    transformers = pytest.importorskip("transformers", reason="the reference engine needs it")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from kapell.engines.reference.batch import DecodeBatch as TorchBatch

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval().to(device)
    return _Engine(lambda: TorchBatch(model, torch.device(device)), config.vocab_size)


@pytest.fixture(
    scope="module",
    params=[
        "onnx",
        pytest.param("cpu", id="reference-cpu", marks=pytest.mark.reference),
        pytest.param("cuda", id="reference-cuda", marks=pytest.mark.reference),
    ],
)
def engine(request: pytest.FixtureRequest) -> _Engine:
    return _onnx_engine() if request.param == "onnx" else _reference_engine(request.param)


def _alone(engine: _Engine, prompt: list[int], feed: list[int]) -> list[Any]:
    batch = engine.new_batch()
    row = Row(key=0, length=len(prompt))
    logits = [next(iter(batch.admit([row], [prompt])))]
    for token in feed:
        row.next_token = token
        logits.append(next(iter(batch.step())))
    return logits


def test_batched_logits_equal_logits_alone(engine: _Engine) -> None:
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, engine.vocab, n).tolist() for n in (5, 2, 17)]
    feeds = [rng.integers(0, engine.vocab, STEPS + 1).tolist() for _ in prompts]
    lengths = [STEPS + 1, 4, STEPS + 1]  # the second sequence leaves early
    expected = [
        _alone(engine, p, f[: n - 1]) for p, f, n in zip(prompts, feeds, lengths, strict=True)
    ]

    batch = engine.new_batch()
    seen: dict[int, list[Any]] = {0: [], 1: [], 2: []}

    def record(rows: list[Row], logits: Any) -> None:
        for row, row_logits in zip(rows, logits, strict=True):
            seen[row.key].append(row_logits)
            row.next_token = feeds[row.key][len(seen[row.key]) - 1]
        batch.remove({r.key for r in batch.rows if len(seen[r.key]) >= lengths[r.key]})

    first = Row(key=0, length=len(prompts[0]))
    record([first], batch.admit([first], [prompts[0]]))
    for _ in range(3):
        record(list(batch.rows), batch.step())
    late = [Row(key=k, length=len(prompts[k])) for k in (1, 2)]
    record(late, batch.admit(late, [prompts[1], prompts[2]]))
    widths = []
    while batch.rows:
        widths.append(len(batch.rows))
        record(list(batch.rows), batch.step())

    assert max(widths) == 3
    for key, logits in seen.items():
        np.testing.assert_allclose(np.stack(logits), np.stack(expected[key]), atol=1e-4)
    assert batch.cache_tokens == 0


@dataclass(frozen=True)
class _Sampling:
    sampler: Callable[[int | None], Sampler[Any]]
    logits: Callable[[Sequence[float]], Any]  # a row of logits in the engine's array type


@pytest.fixture(
    scope="module", params=["onnx", pytest.param("reference", marks=pytest.mark.reference)]
)
def sampling(request: pytest.FixtureRequest) -> _Sampling:
    if request.param == "onnx":
        from kapell.engines.onnx.sampling import sampler as numpy_sampler

        return _Sampling(numpy_sampler, lambda values: np.array(values, dtype=np.float32))
    torch = pytest.importorskip("torch", reason="the reference engine needs torch")
    from kapell.engines.reference.sampling import sampler as torch_sampler

    return _Sampling(torch_sampler, lambda values: torch.tensor(values, dtype=torch.float32))


def test_greedy_takes_the_largest_logit(sampling: _Sampling) -> None:
    assert sampling.sampler(0)(sampling.logits([0.1, 3.0, 2.9]), 0.0, 1.0) == 1


def test_small_top_p_keeps_only_the_top_token(sampling: _Sampling) -> None:
    logits = sampling.logits([1.0, 1.2, 0.9, 1.1])
    assert {sampling.sampler(seed)(logits, 1.0, 0.05) for seed in range(20)} == {1}


def test_seeded_sampling_is_repeatable_and_follows_the_distribution(sampling: _Sampling) -> None:
    flat = sampling.logits([0.0] * 1000)
    first, again = sampling.sampler(5), sampling.sampler(5)
    draws = [first(flat, 1.0, 1.0) for _ in range(5)]
    assert draws == [again(flat, 1.0, 1.0) for _ in range(5)] and len(set(draws)) > 1
    skewed = sampling.logits(np.log([0.7, 0.2, 0.1]).tolist())
    sample = sampling.sampler(3)
    counts = np.bincount([sample(skewed, 1.0, 1.0) for _ in range(3000)], minlength=3)
    np.testing.assert_allclose(counts / 3000, [0.7, 0.2, 0.1], atol=0.03)
    # top_p 0.8 keeps the two most likely tokens (0.7 alone does not reach 0.8).
    sample = sampling.sampler(4)
    assert {sample(skewed, 1.0, 0.8) for _ in range(300)} == {0, 1}
