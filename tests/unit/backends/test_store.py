"""The SQLite store: create, update, unchanged, status kept apart from spec."""

from __future__ import annotations

from pathlib import Path

from kapell.api import Model
from kapell.api.loader import load_text
from kapell.backends.local.store import SQLiteStore

TEXT = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: m}
spec:
  source: {uri: hf://org/m}
"""


def test_apply_reports_created_unchanged_configured(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    [m] = load_text(TEXT)
    assert store.apply(m) == "created"
    assert store.apply(m) == "unchanged"
    [m2] = load_text(TEXT.replace("org/m", "org/n"))
    assert store.apply(m2) == "configured"
    got = store.get(m.key)
    assert isinstance(got, Model) and got.spec.source.uri == "hf://org/n"


def test_status_survives_reopen_and_does_not_touch_spec(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    [m] = load_text(TEXT)
    store.apply(m)
    store.set_status(m.key, {"readyReplicas": 3})
    store.close()
    reopened = SQLiteStore(path)
    got = reopened.get(m.key)
    assert isinstance(got, Model)
    assert got.status.ready_replicas == 3 and got.spec == m.spec
    assert reopened.apply(m) == "unchanged"


def test_delete_and_list(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    [m] = load_text(TEXT)
    store.apply(m)
    assert [r.key for r in store.resources("Model")] == ["Model/default/m"]
    assert store.delete(m.key) and not store.delete(m.key)
    assert store.get(m.key) is None
