"""Hashed n-gram embeddings: words and character trigrams hashed into signed buckets.

This is feature hashing (Weinberger et al., 2009) of a bag of words plus character trigrams,
with a sublinear term frequency and L2 normalisation, so cosine similarity rewards shared
(and similarly spelled) words. Deterministic across processes and machines: blake2b, no seed.

Tokens are the text's UTF-8 bytes (vocabulary 256), so ``embed`` recovers the exact text from
the token ids the shared server hands it. The engine cannot generate text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import AsyncGenerator, Sequence

from kapell.engines.openai_server import (
    ChatMessage,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    render_chat_plainly,
)
from kapell.engines.openai_server.schema import ApiError

RECIPE = re.compile(r"hash-ngrams-(\d+)")
"""How a Model names this engine's vectors in ``source.uri``: ``hash-ngrams-DIMENSIONS``."""
MAX_DIMENSIONS = 8192
_WORD = re.compile(r"\w+")
_TRIGRAM_WEIGHT = 0.5
"""Trigrams count half a word: they catch inflections without drowning the words out."""


def dimensions_of(recipe: str) -> int:
    """The dimensions a ``hash-ngrams-N`` recipe names; ValueError saying what is expected."""
    match = RECIPE.fullmatch(recipe)
    if match is None or not 1 <= int(match.group(1)) <= MAX_DIMENSIONS:
        raise ValueError(
            f"unknown hashembed recipe {recipe!r}: expected hash-ngrams-N with N in "
            f"1..{MAX_DIMENSIONS}, e.g. hash-ngrams-256"
        )
    return int(match.group(1))


def features(text: str) -> dict[str, float]:
    """The weighted n-grams of ``text``: lower-cased words and their padded trigrams."""
    counts: dict[str, float] = defaultdict(float)
    for word in _WORD.findall(text.lower()):
        counts["w:" + word] += 1.0
        padded = f"<{word}>"
        for i in range(len(padded) - 2):
            counts["c:" + padded[i : i + 3]] += _TRIGRAM_WEIGHT
    return counts


def embed_text(text: str, dimensions: int) -> list[float]:
    """One unit vector (all zeros for a text without words)."""
    vector = [0.0] * dimensions
    for feature, count in features(text).items():
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dimensions
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[bucket] += sign * (1.0 + math.log(count) if count >= 1 else count)
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


class HashEmbedBackend:
    """A :class:`kapell.engines.openai_server.Backend` that embeds and never generates."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def system_fingerprint(self) -> str:
        return f"kapell-hashembed:{self.dimensions}"

    @property
    def max_model_len(self) -> int:
        return 1 << 20

    @property
    def vocab_size(self) -> int:
        return 256

    @property
    def supports_embeddings(self) -> bool:
        return True

    async def start(self) -> None:
        self._ready = True

    async def stop(self) -> None:
        self._ready = False

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return render_chat_plainly(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        raise ApiError(
            400,
            "the hashembed engine only embeds (use /v1/embeddings)",
            code="generation_unsupported",
        )
        yield  # pragma: no cover - makes this an async generator

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        return [embed_text(bytes(ids).decode(errors="replace"), self.dimensions) for ids in inputs]

    def stats(self) -> EngineStats:
        return EngineStats(num_running=0, num_waiting=0)
