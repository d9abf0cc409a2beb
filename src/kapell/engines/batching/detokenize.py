"""Turning generated token ids into text one token at a time.

Decoding each token alone breaks words and multi-byte characters across tokens, so the whole
generated sequence is decoded and only the new suffix is returned; a trailing replacement
character means a character is still incomplete and is held back until the next token.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str: ...


class IncrementalDetokenizer:
    """Accumulates one sequence's generated ids and yields the text each new id adds."""

    def __init__(self, tokenizer: Decoder) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = 0

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or len(text) < self._emitted:
            return ""
        new, self._emitted = text[self._emitted :], len(text)
        return new
