"""Continuous batching must not change what a sequence computes.

A randomly initialised two-layer GPT-2 built in memory: each sequence's logits inside a batch
(joining late, padded on the left, with neighbours leaving) equal its logits when run alone.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the reference engine needs torch")
transformers = pytest.importorskip("transformers", reason="the reference engine needs transformers")

from kapell.engines.reference.batch import DecodeBatch, Row  # noqa: E402
from kapell.engines.reference.detokenize import IncrementalDetokenizer  # noqa: E402
from kapell.engines.reference.sampling import sample_token  # noqa: E402

pytestmark = pytest.mark.reference

VOCAB = 50
STEPS = 10
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _alone(model: object, prompt: list[int], feed: list[int], device: str) -> torch.Tensor:
    batch = DecodeBatch(model, torch.device(device))
    row = Row(key=0, length=len(prompt))
    logits = [batch.admit([row], [prompt])[0]]
    for token in feed:
        row.next_token = token
        logits.append(batch.step()[0])
    return torch.stack(logits)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_logits_equal_logits_alone(model: torch.nn.Module, device: str) -> None:
    model = model.to(device)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (5, 2, 17)]
    feeds = [torch.randint(0, VOCAB, (STEPS + 1,), generator=gen).tolist() for _ in prompts]
    lengths = [STEPS + 1, 4, STEPS + 1]  # the second sequence leaves early
    expected = [
        _alone(model, p, f[: n - 1], device)
        for p, f, n in zip(prompts, feeds, lengths, strict=True)
    ]

    batch = DecodeBatch(model, torch.device(device))
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: [], 2: []}

    def record(rows: list[Row], logits: torch.Tensor) -> None:
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
    for key in seen:
        assert torch.allclose(torch.stack(seen[key]), expected[key], atol=1e-4)
    assert batch.cache_tokens == 0


def test_greedy_takes_the_largest_logit() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9])
    assert sample_token(logits, 0.0, 1.0, torch.Generator().manual_seed(0)) == 1


def test_small_top_p_keeps_only_the_top_token() -> None:
    logits = torch.tensor([1.0, 1.2, 0.9, 1.1])
    draws = {
        sample_token(logits, 1.0, 0.05, torch.Generator().manual_seed(seed)) for seed in range(20)
    }
    assert draws == {1}


def test_seeded_sampling_is_repeatable() -> None:
    logits = torch.zeros(1000)
    first = [sample_token(logits, 1.0, 1.0, g) for g in [torch.Generator().manual_seed(5)] * 5]
    again = [sample_token(logits, 1.0, 1.0, g) for g in [torch.Generator().manual_seed(5)] * 5]
    assert first == again
    assert len(set(first)) > 1


class _BytesTokenizer:
    """Each token is one byte of UTF-8; incomplete characters decode to U+FFFD."""

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


def test_detokenizer_holds_back_incomplete_characters() -> None:
    detok = IncrementalDetokenizer(_BytesTokenizer())
    pieces = [detok.add(b) for b in "aé!".encode()]
    assert pieces == ["a", "", "é", "!"]
