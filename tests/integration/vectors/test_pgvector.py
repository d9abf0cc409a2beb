"""The pgvector storage against a real PostgreSQL server: fill, search, delete, reopen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from kapell.api.kinds import VectorStorage
from kapell.engines.hashembed.backend import embed_text
from kapell.gateway.vectors.chunking import Chunking
from kapell.gateway.vectors.index import Chunk, PgVectorIndex

from .stores import declared, stores_in

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


def test_a_declared_pgvector_store_through_the_service(postgres_url: str, tmp_path: Path) -> None:
    """The same service path as an embedded store, with the vectors on the server."""

    async def run() -> None:
        store = declared("shelf", VectorStorage(type="pgvector", url=postgres_url))
        stores = stores_in(tmp_path, store)
        for text in TEXTS:
            record = stores.catalog.put_file("t.txt", "assistants", text.encode())
            await stores.add_file("shelf", record.id, Chunking(), {}, None)
        [hit] = await stores.search("shelf", "ocean submarines", 1, None)
        assert hit.hit.chunk.text == TEXTS[1]
        assert stores.catalog.store("shelf") is not None
        stores.close()

    asyncio.run(run())
