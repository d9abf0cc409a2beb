"""Where a store's chunks and vectors live: ``LanceIndex`` (embedded) or ``PgVectorIndex``.

Both keep the chunk text beside its vector, so a search answers from one place. Both are
synchronous (their clients are); the service calls them in a worker thread.

``LanceIndex`` searches exactly until a store holds ``INDEX_MIN_ROWS`` chunks, then builds an
IVF-PQ index and searches it with a re-ranking step (``refine_factor``: the candidates are
re-scored on their full vectors); ``kapell bench vectors`` measures its recall against exact
search. ``PgVectorIndex`` creates an HNSW index with the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kapell.api.kinds import VectorMetric

INDEX_MIN_ROWS = 20_000
"""Below this many chunks LanceDB's exact scan is fast enough and needs no index build."""
NPROBES = 64
REFINE_FACTOR = 10
"""The search settings, chosen from ``kapell bench vectors`` (docs/llmops.md has the sweep)."""


@dataclass(frozen=True)
class Chunk:
    """One chunk of one file, as stored."""

    file_id: str
    index: int
    text: str


@dataclass(frozen=True)
class Hit:
    """A search result: the chunk and its score (higher is closer)."""

    chunk: Chunk
    score: float


class VectorIndex(Protocol):
    """What the service needs from a store's storage."""

    def add(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None: ...

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[Hit]: ...

    def delete_file(self, file_id: str) -> None: ...

    def drop(self) -> None: ...

    def count(self) -> int: ...


def _score(metric: VectorMetric, distance: float) -> float:
    """A distance turned into a score where higher is closer (cosine: the similarity)."""
    if metric == "cosine":
        return 1.0 - distance
    if metric == "dot":
        return -distance
    return 1.0 / (1.0 + distance)


_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def _checked(file_id: str) -> str:
    """``file_id`` if it can be quoted in a filter as it is (the service makes all ids)."""
    if _SAFE_ID.fullmatch(file_id) is None:
        raise ValueError(f"unexpected file id {file_id!r}")
    return file_id


class LanceIndex:
    """A LanceDB table in ``directory``: files on disk, no server."""

    def __init__(self, directory: Path, dimensions: int, metric: VectorMetric) -> None:
        import lancedb
        import pyarrow as pa

        self.dimensions = dimensions
        self.metric = metric
        self._db = lancedb.connect(str(directory))
        self._schema = pa.schema(
            [
                ("file_id", pa.string()),
                ("chunk", pa.int32()),
                ("text", pa.string()),
                ("vector", pa.list_(pa.float32(), dimensions)),
            ]
        )
        self._table = self._db.create_table("chunks", schema=self._schema, exist_ok=True)
        self._indexed_rows = self._table.count_rows() if self._has_index() else 0

    def _has_index(self) -> bool:
        return any(i.columns == ["vector"] for i in self._table.list_indices())

    def add(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        table = pa.table(
            {
                "file_id": [c.file_id for c in chunks],
                "chunk": pa.array([c.index for c in chunks], pa.int32()),
                "text": [c.text for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.dimensions),
            },
            schema=self._schema,
        )
        self._table.add(table)
        rows = self._table.count_rows()
        if rows >= INDEX_MIN_ROWS and rows >= 2 * self._indexed_rows:
            self.build_index()

    def build_index(self) -> None:
        """(Re)build the IVF-PQ index over every row: about sqrt(rows) partitions, and
        sub-vectors of 8 dimensions (or the nearest split that divides the dimensions)."""
        from lancedb.index import IvfPq

        rows = self._table.count_rows()
        config = IvfPq(
            distance_type=self.metric,
            num_partitions=max(1, int(rows**0.5)),
            num_sub_vectors=_sub_vectors(self.dimensions),
        )
        self._table.create_index("vector", config=config, replace=True)
        self._indexed_rows = rows

    def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        nprobes: int = NPROBES,
        refine_factor: int = REFINE_FACTOR,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``k`` closest chunks; ``exact`` scans every row even when indexed."""
        query: Any = self._table.search(vector, vector_column_name="vector")
        query = query.distance_type(self.metric)
        if exact:
            query = query.bypass_vector_index()
        elif self._indexed_rows:
            query = query.nprobes(nprobes).refine_factor(refine_factor)
        rows = query.select(["file_id", "chunk", "text", "_distance"]).limit(k).to_list()
        return [
            Hit(Chunk(r["file_id"], r["chunk"], r["text"]), _score(self.metric, r["_distance"]))
            for r in rows
        ]

    def delete_file(self, file_id: str) -> None:
        self._table.delete(f"file_id = '{_checked(file_id)}'")

    def drop(self) -> None:
        self._db.drop_table("chunks")

    def count(self) -> int:
        rows: int = self._table.count_rows()
        return rows


def _sub_vectors(dimensions: int) -> int:
    for width in (8, 16, 4, 2):
        if dimensions % width == 0:
            return dimensions // width
    return 1


_PG_OPS: dict[str, tuple[str, str]] = {
    "cosine": ("<=>", "vector_cosine_ops"),
    "dot": ("<#>", "vector_ip_ops"),
    "l2": ("<->", "vector_l2_ops"),
}


class PgVectorIndex:
    """A table in a PostgreSQL database with the pgvector extension (an HNSW index)."""

    def __init__(self, url: str, table: str, dimensions: int, metric: VectorMetric) -> None:
        import psycopg

        if _SAFE_ID.fullmatch(table) is None:
            raise ValueError(f"unexpected table name {table!r}")
        self.dimensions = dimensions
        self.metric = metric
        self._table = "kapell_vs_" + table.replace("-", "_")
        self._conn: Any = psycopg.connect(url, autocommit=True)
        operator, ops = _PG_OPS[metric]
        self._operator = operator
        with self._conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (file_id text NOT NULL, "
                f"chunk integer NOT NULL, text text NOT NULL, "
                f"embedding vector({dimensions}) NOT NULL, PRIMARY KEY (file_id, chunk))"
            )
            cur.execute(
                f"CREATE INDEX IF NOT EXISTS {self._table}_hnsw ON {self._table} "
                f"USING hnsw (embedding {ops})"
            )

    def add(self, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]) -> None:
        rows = [
            (c.file_id, c.index, c.text, _pg_vector(v))
            for c, v in zip(chunks, vectors, strict=True)
        ]
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self._table} VALUES (%s, %s, %s, %s::vector) "
                "ON CONFLICT (file_id, chunk) DO UPDATE SET text = EXCLUDED.text, "
                "embedding = EXCLUDED.embedding",
                rows,
            )

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[Hit]:
        with self._conn.cursor() as cur:
            cur.execute(
                f"SELECT file_id, chunk, text, embedding {self._operator} %s::vector AS d "
                f"FROM {self._table} ORDER BY d LIMIT %s",
                (_pg_vector(vector), k),
            )
            rows = cur.fetchall()
        return [Hit(Chunk(f, i, t), _score(self.metric, float(d))) for f, i, t, d in rows]

    def delete_file(self, file_id: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self._table} WHERE file_id = %s", (file_id,))

    def drop(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self._table}")

    def count(self) -> int:
        with self._conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self._table}")
            row = cur.fetchone()
        return int(row[0])

    def close(self) -> None:
        self._conn.close()


def _pg_vector(vector: npt.NDArray[np.float32]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"
