"""The vector store operations behind the routes: create, fill, search, delete.

Two ways a store comes to be, one catalog:

- **declared**: a ``VectorStore`` resource (``kapell apply``) is a store whose id is its name,
  with the embedding model, dimensions, metric and storage the spec gives. The API can fill,
  search and list it but not delete it (the resource owns it); deleting the resource leaves the
  data, and the store becomes an API store that the API may delete.
- **API-created**: ``POST /v1/vector_stores`` with kapell's extension field
  ``embedding_model`` (and optionally ``dimensions``, ``metric``); id ``vs_...``, embedded
  storage. The model is asked for one embedding at once, so an absent model or a dimension
  that does not match is refused before the store exists.

Every add embeds all chunks before it changes anything, and the catalog lists a file in a
store only after its chunks are in the index: a refused or failed add leaves the store as it
was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kapell.api.kinds import VectorMetric, VectorStore
from kapell.gateway.errors import GatewayError
from kapell.gateway.vectors.catalog import Catalog, FileRecord, MemberRecord, StoreRecord, new_id
from kapell.gateway.vectors.chunking import Chunking, chunk_text
from kapell.gateway.vectors.index import Chunk, Hit, LanceIndex, PgVectorIndex, VectorIndex

Embed = Callable[[str, Sequence[str], str | None], Awaitable[list[list[float]]]]
"""``embed(model, texts, authorization)``: the vectors of ``texts`` from ``model`` through the
gateway's own ``/v1/embeddings`` (raises ``GatewayError`` with the gateway's answer)."""
EMBED_BATCH = 64
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchHit:
    hit: Hit
    filename: str
    attributes: dict[str, Any]


class VectorStores:
    """Every store of one gateway: the catalog in ``directory/catalog.db``, embedded indexes
    in ``directory/STORE_ID/``."""

    def __init__(self, directory: Path, embed: Embed) -> None:
        self.directory = directory
        self.catalog = Catalog(directory / "catalog.db")
        self._embed = embed
        self._indexes: dict[str, VectorIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def close(self) -> None:
        for index in self._indexes.values():
            if isinstance(index, PgVectorIndex):
                index.close()
        self._indexes.clear()
        self.catalog.close()

    # --- declared stores ---------------------------------------------------------------------

    def declare(self, resources: Sequence[VectorStore]) -> list[str]:
        """Make the catalog follow the VectorStore resources; the problems it refused.

        A declared store that already holds files keeps its dimensions, metric and storage
        when the spec changes them (its vectors would not fit); that is reported, not applied.
        """
        problems = []
        names = {r.metadata.name for r in resources}
        for resource in resources:
            spec = resource.spec
            wanted = StoreRecord(
                id=resource.metadata.name,
                name=resource.metadata.name,
                embedding_model=spec.embedding_model,
                dimensions=spec.dimensions,
                metric=spec.metric,
                storage=spec.storage.type,
                url=spec.storage.url,
                declared=True,
                created_at=int(time.time()),
            )
            old = self.catalog.store(wanted.id)
            if old is not None:
                wanted = replace(wanted, created_at=old.created_at)
                shape = (old.dimensions, old.metric, old.storage, old.url)
                if shape != (wanted.dimensions, wanted.metric, wanted.storage, wanted.url):
                    if self.catalog.members(old.id):
                        problems.append(
                            f"VectorStore {old.id}: holds files, so its dimensions, metric and "
                            "storage stay as they were; delete its files first to change them"
                        )
                        wanted = replace(
                            wanted, dimensions=old.dimensions, metric=old.metric,
                            storage=old.storage, url=old.url,
                        )  # fmt: skip
                    self._indexes.pop(old.id, None)
            self.catalog.put_store(wanted)
        for store in self.catalog.stores():
            if store.declared and store.id not in names:
                self.catalog.put_store(replace(store, declared=False))
        for problem in problems:
            logger.warning("%s", problem)
        return problems

    # --- stores ------------------------------------------------------------------------------

    def get(self, store_id: str) -> StoreRecord:
        store = self.catalog.store(store_id)
        if store is None:
            raise GatewayError(
                404, f"vector store '{store_id}' does not exist", code="vector_store_not_found"
            )
        return store

    async def create(
        self,
        name: str,
        embedding_model: str | None,
        dimensions: int | None,
        metric: VectorMetric,
        metadata: dict[str, str],
        authorization: str | None,
    ) -> StoreRecord:
        if not embedding_model:
            raise GatewayError(
                400,
                "a vector store needs an embedding model: pass 'embedding_model' in the body "
                "(extra_body with the openai client), or declare a VectorStore resource",
                code="bad_embedding_model",
                param="embedding_model",
            )
        probe = await self._vectors(embedding_model, ["dimension probe"], authorization, name)
        got = probe.shape[1]
        if dimensions is not None and dimensions != got:
            raise GatewayError(
                400,
                f"dimensions {dimensions} does not match embedding model '{embedding_model}', "
                f"which returns {got}-dimensional vectors",
                code="embedding_dimensions_mismatch",
                param="dimensions",
            )
        store = StoreRecord(
            id=new_id("vs_"), name=name, embedding_model=embedding_model, dimensions=got,
            metric=metric, storage="embedded", url=None, declared=False,
            created_at=int(time.time()), metadata=metadata,
        )  # fmt: skip
        self.catalog.put_store(store)
        return store

    async def delete(self, store_id: str) -> None:
        store = self.get(store_id)
        if store.declared:
            raise GatewayError(
                409,
                f"vector store '{store_id}' is declared by the VectorStore resource "
                f"'{store_id}'; delete the resource (its data stays), then the store",
                code="vector_store_declared",
            )
        async with self._lock(store_id):
            index = self._index(store)
            await asyncio.to_thread(index.drop)
            self._indexes.pop(store_id, None)
            self.catalog.delete_store(store_id)

    # --- files -------------------------------------------------------------------------------

    def file(self, file_id: str) -> FileRecord:
        record = self.catalog.file(file_id)
        if record is None:
            raise GatewayError(404, f"file '{file_id}' does not exist", code="file_not_found")
        return record

    async def add_file(
        self,
        store_id: str,
        file_id: str,
        chunking: Chunking,
        attributes: dict[str, Any],
        authorization: str | None,
    ) -> MemberRecord:
        store = self.get(store_id)
        record = self.file(file_id)
        text = _text_of(record, self.catalog.content(file_id))
        chunks = [Chunk(file_id, i, t) for i, t in enumerate(chunk_text(text, chunking))]
        vectors = await self._vectors(
            store.embedding_model, [c.text for c in chunks], authorization, store.id,
            expected=store.dimensions,
        )  # fmt: skip
        async with self._lock(store_id):
            index = self._index(store)
            if self.catalog.member(store_id, file_id) is not None:
                await asyncio.to_thread(index.delete_file, file_id)
            if chunks:
                await asyncio.to_thread(index.add, chunks, vectors)
            member = MemberRecord(
                store_id, file_id, int(time.time()), len(chunks),
                sum(len(c.text.encode()) for c in chunks), attributes,
            )  # fmt: skip
            self.catalog.put_member(member)
        return member

    def member(self, store_id: str, file_id: str) -> MemberRecord:
        self.get(store_id)
        member = self.catalog.member(store_id, file_id)
        if member is None:
            raise GatewayError(
                404,
                f"file '{file_id}' is not in vector store '{store_id}'",
                code="file_not_found",
            )
        return member

    async def remove_file(self, store_id: str, file_id: str) -> None:
        self.member(store_id, file_id)
        store = self.get(store_id)
        async with self._lock(store_id):
            await asyncio.to_thread(self._index(store).delete_file, file_id)
            self.catalog.delete_member(store_id, file_id)

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file and its chunks from every store that holds it."""
        self.file(file_id)
        for store_id in self.catalog.stores_of(file_id):
            await self.remove_file(store_id, file_id)
        self.catalog.delete_file(file_id)

    # --- search ------------------------------------------------------------------------------

    async def search(
        self, store_id: str, query: str, k: int, authorization: str | None
    ) -> list[SearchHit]:
        store = self.get(store_id)
        vector = await self._vectors(
            store.embedding_model, [query], authorization, store.id, expected=store.dimensions
        )
        hits = await asyncio.to_thread(self._index(store).search, vector[0], k)
        members = {m.file_id: m for m in self.catalog.members(store_id)}
        names = {f.id: f.filename for f in self.catalog.files()}
        return [
            SearchHit(h, names.get(h.chunk.file_id, ""), members[h.chunk.file_id].attributes)
            for h in hits
            if h.chunk.file_id in members
        ]

    # --- parts -------------------------------------------------------------------------------

    def _lock(self, store_id: str) -> asyncio.Lock:
        return self._locks.setdefault(store_id, asyncio.Lock())

    def _index(self, store: StoreRecord) -> VectorIndex:
        index = self._indexes.get(store.id)
        if index is None:
            try:
                if store.storage == "pgvector":
                    assert store.url is not None
                    index = PgVectorIndex(store.url, store.id, store.dimensions, store.metric)
                else:
                    index = LanceIndex(self.directory / store.id, store.dimensions, store.metric)
            except ImportError as exc:
                raise GatewayError(
                    503,
                    f"vector store '{store.id}' needs the Python package {exc.name!r}: "
                    "pip install 'kapell[vectors]'",
                    type="server_error",
                    code="vectors_not_installed",
                ) from None
            self._indexes[store.id] = index
        return index

    async def _vectors(
        self,
        model: str,
        texts: Sequence[str],
        authorization: str | None,
        store: str,
        *,
        expected: int | None = None,
    ) -> npt.NDArray[np.float32]:
        """The embeddings of ``texts``; a 400 naming the store when its model is absent or
        answers with vectors of another dimension."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            try:
                vectors += await self._embed(
                    model, texts[start : start + EMBED_BATCH], authorization
                )
            except GatewayError as error:
                if error.code == "model_not_found":
                    raise GatewayError(
                        400,
                        f"vector store '{store}': its embedding model '{model}' does not "
                        "exist; apply a Model of that name (e.g. engine hashembed)",
                        code="embedding_model_not_found",
                    ) from None
                raise
        array = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        if expected is not None and texts and array.shape[1] != expected:
            raise GatewayError(
                400,
                f"vector store '{store}' holds {expected}-dimensional vectors, but its "
                f"embedding model '{model}' returns {array.shape[1]}-dimensional ones",
                code="embedding_dimensions_mismatch",
            )
        return array


def _text_of(record: FileRecord, content: bytes) -> str:
    """The file's text; a 400 naming the file when it is not UTF-8 text."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GatewayError(
            400,
            f"file '{record.filename}' ({record.id}) is not UTF-8 text (byte "
            f"0x{content[exc.start]:02x} at offset {exc.start}); vector stores take text files",
            code="unsupported_file",
        ) from None
    if "\x00" in text:
        raise GatewayError(
            400,
            f"file '{record.filename}' ({record.id}) is not text (it holds NUL bytes); "
            "vector stores take text files",
            code="unsupported_file",
        )
    return text
