"""The pgvector storage against a real PostgreSQL server: fill, search, delete, reopen."""

from __future__ import annotations

import numpy as np

from kapell.engines.hashembed.backend import embed_text
from kapell.gateway.vectors.index import Chunk, PgVectorIndex

TEXTS = [
    "the orchard grows apples and pears",
    "submarines dive below the ocean surface",
    "a violin has four strings and a bow",
    "glaciers carve valleys over thousands of years",
]


def _vectors(texts: list[str]) -> np.ndarray:
    return np.array([embed_text(t, 128) for t in texts], dtype=np.float32)


def test_pgvector_index_round_trip(postgres_url: str) -> None:
    index = PgVectorIndex(postgres_url, "vs_round_trip", 128, "cosine")
    chunks = [Chunk(f"file-{i % 2}", i, t) for i, t in enumerate(TEXTS)]
    index.add(chunks, _vectors(TEXTS))
    assert index.count() == 4

    hits = index.search(_vectors(["which instrument has strings?"])[0], 2)
    assert hits[0].chunk.text == TEXTS[2]
    assert 0.0 < hits[0].score <= 1.0 and hits[0].score > hits[1].score

    index.delete_file("file-0")  # chunks 0 and 2
    assert index.count() == 2
    index.close()

    reopened = PgVectorIndex(postgres_url, "vs_round_trip", 128, "cosine")
    assert {h.chunk.text for h in reopened.search(_vectors(["ocean"])[0], 5)} == {
        TEXTS[1], TEXTS[3],
    }  # fmt: skip
    reopened.drop()
    reopened.close()
