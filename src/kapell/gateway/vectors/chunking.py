"""Cutting a text into overlapping chunks, OpenAI's ``static`` chunking strategy.

Sizes are in whitespace-separated words, the gateway's stand-in for tokens: it cannot know
the embedding model's tokenizer, and a word is about 1.3 tokens of English for BPE models.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_TOKENS = 800
DEFAULT_OVERLAP_TOKENS = 400


@dataclass(frozen=True)
class Chunking:
    """``max_tokens`` per chunk (100..4096), ``overlap_tokens`` shared by neighbours
    (at most half of ``max_tokens``), as OpenAI's API bounds them."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        if not 100 <= self.max_tokens <= 4096:
            raise ValueError("max_chunk_size_tokens: expected 100..4096")
        if not 0 <= self.overlap_tokens <= self.max_tokens // 2:
            raise ValueError("chunk_overlap_tokens: expected 0..max_chunk_size_tokens/2")


def chunk_text(text: str, chunking: Chunking) -> list[str]:
    """The chunks of ``text`` in order; none for a text without words.

    >>> chunk_text(" ".join(map(str, range(250))), Chunking(100, 50))[2].split()[0]
    '100'
    """
    words = text.split()
    step = chunking.max_tokens - chunking.overlap_tokens
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + chunking.max_tokens]))
        if start + chunking.max_tokens >= len(words):
            break
    return chunks
