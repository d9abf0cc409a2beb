"""What the vector store API lists, in one SQLite file: stores, uploaded files, memberships.

The vectors themselves live in each store's index; this catalog records a file as part of a
store only after its chunks are in the index, so a failed add leaves no half-listed file.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapell.api.kinds import VectorMetric

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, embedding_model TEXT NOT NULL,
  dimensions INTEGER NOT NULL, metric TEXT NOT NULL, storage TEXT NOT NULL,
  url TEXT, declared INTEGER NOT NULL, created_at INTEGER NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL,
  created_at INTEGER NOT NULL, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS store_files (
  store_id TEXT NOT NULL, file_id TEXT NOT NULL, created_at INTEGER NOT NULL,
  chunks INTEGER NOT NULL, usage_bytes INTEGER NOT NULL, attributes TEXT NOT NULL,
  PRIMARY KEY (store_id, file_id));
"""


@dataclass(frozen=True)
class StoreRecord:
    """One store. ``declared``: made from a VectorStore resource (id = its name)."""

    id: str
    name: str
    embedding_model: str
    dimensions: int
    metric: VectorMetric
    storage: str
    url: str | None
    declared: bool
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    created_at: int
    size: int


@dataclass(frozen=True)
class MemberRecord:
    """A file in a store: how many chunks it gave and their bytes of text."""

    store_id: str
    file_id: str
    created_at: int
    chunks: int
    usage_bytes: int
    attributes: dict[str, Any]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``vs_`` or ``file-`` and 24 hex digits."""
    return prefix + secrets.token_hex(12)


class Catalog:
    """The SQLite catalog at ``path`` (created if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=WAL;" + _SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- stores ------------------------------------------------------------------------------

    def put_store(self, store: StoreRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO stores VALUES (?,?,?,?,?,?,?,?,?,?)",
            (store.id, store.name, store.embedding_model, store.dimensions, store.metric,
             store.storage, store.url, int(store.declared), store.created_at,
             json.dumps(store.metadata)),
        )  # fmt: skip

    def store(self, store_id: str) -> StoreRecord | None:
        row = self._db.execute("SELECT * FROM stores WHERE id = ?", (store_id,)).fetchone()
        return None if row is None else _store(row)

    def stores(self) -> list[StoreRecord]:
        rows = self._db.execute("SELECT * FROM stores ORDER BY created_at, id").fetchall()
        return [_store(r) for r in rows]

    def delete_store(self, store_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM store_files WHERE store_id = ?", (store_id,))
            self._db.execute("DELETE FROM stores WHERE id = ?", (store_id,))

    # --- files -------------------------------------------------------------------------------

    def put_file(self, filename: str, purpose: str, content: bytes) -> FileRecord:
        record = FileRecord(new_id("file-"), filename, purpose, int(time.time()), len(content))
        self._db.execute(
            "INSERT INTO files VALUES (?,?,?,?,?)",
            (record.id, filename, purpose, record.created_at, content),
        )
        return record

    def file(self, file_id: str) -> FileRecord | None:
        row = self._db.execute(
            "SELECT id, filename, purpose, created_at, length(content) FROM files WHERE id = ?",
            (file_id,),
        ).fetchone()
        return None if row is None else FileRecord(*row)

    def files(self) -> list[FileRecord]:
        rows = self._db.execute(
            "SELECT id, filename, purpose, created_at, length(content) FROM files "
            "ORDER BY created_at, id"
        ).fetchall()
        return [FileRecord(*r) for r in rows]

    def content(self, file_id: str) -> bytes:
        row = self._db.execute("SELECT content FROM files WHERE id = ?", (file_id,)).fetchone()
        return bytes(row[0]) if row else b""

    def delete_file(self, file_id: str) -> None:
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    # --- membership --------------------------------------------------------------------------

    def put_member(self, member: MemberRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO store_files VALUES (?,?,?,?,?,?)",
            (member.store_id, member.file_id, member.created_at, member.chunks,
             member.usage_bytes, json.dumps(member.attributes)),
        )  # fmt: skip

    def member(self, store_id: str, file_id: str) -> MemberRecord | None:
        row = self._db.execute(
            "SELECT * FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
        ).fetchone()
        return None if row is None else _member(row)

    def members(self, store_id: str) -> list[MemberRecord]:
        rows = self._db.execute(
            "SELECT * FROM store_files WHERE store_id = ? ORDER BY created_at, file_id",
            (store_id,),
        ).fetchall()
        return [_member(r) for r in rows]

    def stores_of(self, file_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT store_id FROM store_files WHERE file_id = ?", (file_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def delete_member(self, store_id: str, file_id: str) -> None:
        self._db.execute(
            "DELETE FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
        )


def _store(row: tuple[Any, ...]) -> StoreRecord:
    sid, name, model, dims, metric, storage, url, declared, created, metadata = row
    return StoreRecord(
        sid, name, model, dims, metric, storage, url, bool(declared), created, json.loads(metadata)
    )


def _member(row: tuple[Any, ...]) -> MemberRecord:
    store_id, file_id, created, chunks, usage, attributes = row
    return MemberRecord(store_id, file_id, created, chunks, usage, json.loads(attributes))
