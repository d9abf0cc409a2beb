"""Chunking: sizes and overlaps as OpenAI's static strategy bounds them, in words."""

from __future__ import annotations

import pytest

from kapell.gateway.vectors.chunking import Chunking, chunk_text


def test_chunks_overlap_and_cover_every_word() -> None:
    words = [f"w{i}" for i in range(1000)]
    chunks = chunk_text(" ".join(words), Chunking(300, 100))
    assert [c.split()[0] for c in chunks] == ["w0", "w200", "w400", "w600", "w800"]
    assert all(len(c.split()) <= 300 for c in chunks)
    assert chunks[-1].split()[-1] == "w999"
    assert chunks[0].split()[200:] == chunks[1].split()[:100]


def test_short_and_empty_texts() -> None:
    assert chunk_text("one two", Chunking()) == ["one two"]
    assert chunk_text(" \n\t", Chunking()) == []


@pytest.mark.parametrize(("size", "overlap"), [(99, 0), (4097, 0), (200, 101), (200, -1)])
def test_out_of_bounds_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="expected"):
        Chunking(size, overlap)
