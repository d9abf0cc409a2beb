"""Desired and observed state in one SQLite file under the state directory.

SQLite gives atomic, durable writes for free: a crash or a bad ``apply`` never leaves a
half-written resource behind. Resources are stored as the JSON users would see from
``kapell get -o json``; status is stored apart so controllers never overwrite a spec.

API keys live here too, as ``api.tenant.ApiKey`` records (the hash, never the key): one file
that is already atomic and per user, so a Tenant and its keys are deleted in one transaction.
The file is made readable by its owner only (0600).

Every version of a Prompt ever applied is kept in ``prompt_versions`` (the resource row holds
the latest spec only), so an older version stays servable and a changed template under a
version number already used is refused in the same transaction that would have stored it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from kapell.api import KINDS, Prompt, Resource
from kapell.api.errors import ConflictError
from kapell.api.prompt import PromptVersion, version_conflict
from kapell.api.tenant import ApiKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    key         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replica_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    model_key   TEXT NOT NULL,
    replica     TEXT NOT NULL,
    event       TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS counters (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS prompt_versions (
    key         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (key, version)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    body        TEXT NOT NULL
);
"""


def utc_now() -> str:
    """RFC 3339 UTC timestamp with seconds, as Kubernetes writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SQLiteStore:
    """Resources and replica events in ``<state_dir>/state.db`` (WAL mode, one writer)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)  # also a file made by an earlier version; WAL files copy its mode
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def apply(self, resource: Resource) -> str:
        """Create or update; returns ``created``, ``configured`` or ``unchanged``.

        A Prompt whose version is already stored with other content raises ``ConflictError``
        and changes nothing."""
        body = resource.model_dump_json(by_alias=True, exclude={"status"})
        now = utc_now()
        with self._tx() as db:
            if isinstance(resource, Prompt):
                _add_prompt_version(db, resource, now)
            row = db.execute(
                "SELECT body, generation FROM resources WHERE key = ?", (resource.key,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO resources VALUES (?, ?, ?, ?, 1, ?, '{}', ?, ?)",
                    (
                        resource.key,
                        resource.kind,
                        resource.metadata.namespace,
                        resource.metadata.name,
                        body,
                        now,
                        now,
                    ),
                )
                return "created"
            if row[0] == body:
                return "unchanged"
            db.execute(
                "UPDATE resources SET body = ?, generation = ?, updated_at = ? WHERE key = ?",
                (body, row[1] + 1, now, resource.key),
            )
            return "configured"

    def delete(self, key: str) -> bool:
        """Delete a resource; a Tenant takes its API keys with it."""
        kind, namespace, name = key.split("/")
        with self._tx() as db:
            if kind == "Tenant":
                db.execute(
                    "DELETE FROM api_keys WHERE namespace = ? AND tenant = ?", (namespace, name)
                )
            if kind == "Prompt":
                db.execute("DELETE FROM prompt_versions WHERE key = ?", (key,))
            return db.execute("DELETE FROM resources WHERE key = ?", (key,)).rowcount > 0

    def prompt_versions(self, key: str) -> list[PromptVersion]:
        """Every version of the Prompt ``key`` applied so far, oldest number first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM prompt_versions WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
        return [PromptVersion.model_validate_json(row[0]) for row in rows]

    def add_key(self, key: ApiKey) -> bool:
        """Store a key's record; False if a key with its id is already stored."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM api_keys WHERE id = ?", (key.id,)).fetchone():
                return False
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?)",
                (key.id, key.namespace, key.tenant, key.model_dump_json(by_alias=True)),
            )
        return True

    def api_keys(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM api_keys ORDER BY id").fetchall()
        return [ApiKey.model_validate_json(row[0]) for row in rows]

    def remove_key(self, key_id: str) -> ApiKey | None:
        """Delete a key's record; the record, or None if there was none."""
        with self._tx() as db:
            row = db.execute("SELECT body FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
        return ApiKey.model_validate_json(row[0])

    def get(self, key: str) -> Resource | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, body, status FROM resources WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else _resource(*row)

    def resources(self, kind: str | None = None) -> list[Resource]:
        query = "SELECT kind, body, status FROM resources"
        args: tuple[str, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            args = (kind,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY key", args).fetchall()
        return [_resource(*row) for row in rows]

    def keys(self, kind: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT key FROM resources WHERE kind = ?", (kind,)).fetchall()
        return [row[0] for row in rows]

    def set_status(self, key: str, status: dict[str, object]) -> None:
        with self._tx() as db:
            db.execute("UPDATE resources SET status = ? WHERE key = ?", (json.dumps(status), key))

    def record_event(self, model_key: str, replica: str, event: str, message: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO replica_events (at, model_key, replica, event, message) "
                "VALUES (?, ?, ?, ?, ?)",
                (utc_now(), model_key, replica, event, message),
            )

    def events(self, limit: int = 50, model_key: str | None = None) -> list[dict[str, str]]:
        """The latest replica events (of one model if given), oldest first: starts, crashes,
        readiness, stops."""
        where, args = ("", ()) if model_key is None else ("WHERE model_key = ? ", (model_key,))
        with self._lock:
            rows = self._db.execute(
                "SELECT at, model_key, replica, event, message FROM replica_events "
                f"{where}ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        fields = ("at", "model_key", "replica", "event", "message")
        return [dict(zip(fields, row, strict=True)) for row in reversed(rows)]

    def stamps(self, kind: str | None = None) -> dict[str, dict[str, object]]:
        """Per key: when the resource was created and last changed, and its generation."""
        query = "SELECT key, created_at, updated_at, generation FROM resources"
        args: tuple[str, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            args = (kind,)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return {
            key: {"createdAt": created, "updatedAt": updated, "generation": generation}
            for key, created, updated, generation in rows
        }

    def next_number(self, counter: str) -> int:
        """The next value (1, 2, ...) of a counter that survives restarts: replica ids drawn
        from it never repeat across runs of ``kapell up`` on the same state directory."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counters VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (counter,),
            )
            row = db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _add_prompt_version(db: sqlite3.Connection, prompt: Prompt, now: str) -> None:
    version = PromptVersion.of(prompt.spec)
    row = db.execute(
        "SELECT body FROM prompt_versions WHERE key = ? AND version = ?",
        (prompt.key, version.version),
    ).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO prompt_versions VALUES (?, ?, ?, ?)",
            (prompt.key, version.version, version.model_dump_json(), now),
        )
        return
    conflict = version_conflict(
        prompt.metadata.name, PromptVersion.model_validate_json(row[0]), version
    )
    if conflict is not None:
        raise ConflictError(conflict)


def _resource(kind: str, body: str, status: str) -> Resource:
    data = json.loads(body)
    data["status"] = json.loads(status)
    return KINDS[kind].model_validate(data)
