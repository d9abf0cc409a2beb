"""A ``VectorStores`` whose embeddings are the hashembed engine's function, called in-process.

For tests of the store's own logic (retrieval, storage backends): the same vectors a
``hashembed`` replica returns, without starting one. The HTTP path is what
test_vector_store_api.py covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kapell.api import ObjectMeta, VectorStore
from kapell.api.kinds import VectorStorage, VectorStoreSpec
from kapell.engines.hashembed.backend import embed_text
from kapell.gateway.errors import GatewayError
from kapell.gateway.vectors.service import VectorStores

MODELS = {"embed": 256}


async def hash_embed(
    model: str, texts: Sequence[str], authorization: str | None
) -> list[list[float]]:
    if model not in MODELS:
        raise GatewayError(404, f"model '{model}' does not exist", code="model_not_found")
    return [embed_text(t, MODELS[model]) for t in texts]


def declared(name: str, storage: VectorStorage | None = None) -> VectorStore:
    spec = VectorStoreSpec(
        embedding_model="embed", dimensions=256, storage=storage or VectorStorage()
    )
    return VectorStore(metadata=ObjectMeta(name=name), spec=spec)


def stores_in(directory: Path, *declare: VectorStore) -> VectorStores:
    stores = VectorStores(directory, hash_embed)
    stores.declare(list(declare))
    return stores
