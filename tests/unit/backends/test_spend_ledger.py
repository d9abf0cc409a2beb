"""The spend ledger in SQLite: charges add up per day, months sum days, a reopen keeps all."""

from __future__ import annotations

from pathlib import Path

from kapell.backends.local.spend import Charge, SpendLedger
from kapell.backends.local.store import SQLiteStore
from kapell.policy.budget import Spend


def test_charges_add_up_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)  # the ledger shares the store's file
    ledger = SpendLedger(path)
    ledger.add([
        Charge("2026-12-01", "a", "alice", "m", Spend(10, 5, 1.0, 2.0, 0.5), "modelled"),
        Charge("2026-12-02", "a", "alice", "m", Spend(1, 1, 1.0, 1.0, 0.1), "modelled"),
        Charge("2026-12-02", "a", "bob", "m", Spend(2, 2, 0.0, 0.0, 0.0), "measured"),
        Charge("2026-12-02", "b", "-", "n", Spend(0, 0, 3.0, 9.0, 1.0), "modelled"),
    ])  # fmt: skip
    ledger.add([Charge("2026-12-02", "a", "alice", "m", Spend(1, 1, 1.0, 1.0, 0.1), "modelled")])
    ledger.close()
    store.close()

    reopened = SpendLedger(path)
    day = {(r.namespace, r.tenant): r for r in reopened.totals("2026-12-02")}
    assert day["a", "alice"].spend == Spend(2, 2, 2.0, 2.0, 0.2)
    assert day["a", "bob"].energy_source == "measured"
    assert day["a", "alice"].energy_source == "modelled"
    assert reopened.namespace_total("2026-12", "a").tokens == 10 + 5 + 4 + 4
    assert [r.namespace for r in reopened.totals("2026-12", "b")] == ["b"]
    assert reopened.totals("2026-11") == []
