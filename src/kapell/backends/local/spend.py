"""The spend ledger: accounted spend per UTC day, namespace, tenant and model, in SQLite.

It lives in the instance's ``state.db`` beside the resources, so a restart of ``kapell up``
loses no accounted spend; each accounting interval is one transaction that adds to the day's
rows. Month totals are sums of days.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import astuple, dataclass
from pathlib import Path

from kapell.policy.budget import Spend

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    day          TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    model        TEXT NOT NULL,
    tokens_in    INTEGER NOT NULL DEFAULT 0,
    tokens_out   INTEGER NOT NULL DEFAULT 0,
    gpu_seconds  REAL NOT NULL DEFAULT 0,
    joules       REAL NOT NULL DEFAULT 0,
    grams_co2    REAL NOT NULL DEFAULT 0,
    energy_source TEXT NOT NULL DEFAULT 'modelled',
    PRIMARY KEY (day, namespace, tenant, model)
);
"""
_SUMS = "SUM(tokens_in), SUM(tokens_out), SUM(gpu_seconds), SUM(joules), SUM(grams_co2)"


@dataclass(frozen=True)
class Charge:
    """Spend of one tenant on one model of a namespace on one UTC day."""

    day: str
    namespace: str
    tenant: str
    model: str
    spend: Spend
    energy_source: str


@dataclass(frozen=True)
class SpendRow:
    """Totals of one namespace and tenant over a period; ``energy_source`` says whether any of
    the joules were measured."""

    namespace: str
    tenant: str
    spend: Spend
    energy_source: str


class SpendLedger:
    """Adds charges and sums them; safe to call from any thread."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def add(self, charges: list[Charge]) -> None:
        """Add every charge in one transaction (all or none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for c in charges:
                    self._db.execute(
                        "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(day, namespace, tenant, model) DO UPDATE SET "
                        "tokens_in = tokens_in + excluded.tokens_in, "
                        "tokens_out = tokens_out + excluded.tokens_out, "
                        "gpu_seconds = gpu_seconds + excluded.gpu_seconds, "
                        "joules = joules + excluded.joules, "
                        "grams_co2 = grams_co2 + excluded.grams_co2, "
                        "energy_source = CASE WHEN excluded.energy_source = 'measured' "
                        "THEN 'measured' ELSE energy_source END",
                        (c.day, c.namespace, c.tenant, c.model, *astuple(c.spend),
                         c.energy_source),
                    )  # fmt: skip
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def totals(self, period: str, namespace: str | None = None) -> list[SpendRow]:
        """Per namespace and tenant, the spend of days starting with ``period`` (a day
        ``2026-12-02`` or a month ``2026-12``)."""
        where, args = "day LIKE ?", [period + "%"]
        if namespace is not None:
            where += " AND namespace = ?"
            args.append(namespace)
        with self._lock:
            rows = self._db.execute(
                f"SELECT namespace, tenant, {_SUMS}, MAX(energy_source = 'measured') "
                f"FROM spend WHERE {where} GROUP BY namespace, tenant ORDER BY namespace, tenant",
                args,
            ).fetchall()
        return [
            SpendRow(ns, tenant, Spend(int(ti), int(to), gs, j, g),
                     "measured" if measured else "modelled")
            for ns, tenant, ti, to, gs, j, g, measured in rows
        ]  # fmt: skip

    def namespace_total(self, period: str, namespace: str) -> Spend:
        """All tenants' spend of ``namespace`` in ``period``."""
        total = Spend()
        for row in self.totals(period, namespace):
            total += row.spend
        return total

    def close(self) -> None:
        with self._lock:
            self._db.close()
