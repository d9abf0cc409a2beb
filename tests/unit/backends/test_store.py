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


def test_counters_continue_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    assert [store.next_number("replica") for _ in range(3)] == [1, 2, 3]
    assert store.next_number("other") == 1
    store.close()
    assert SQLiteStore(path).next_number("replica") == 4


def test_events_of_one_model_and_stamps(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    [m] = load_text(TEXT)
    store.apply(m)
    for model, replica, event in [("Model/default/m", "m-1", "Starting"),
                                  ("Model/default/x", "x-1", "Starting"),
                                  ("Model/default/m", "m-1", "Ready")]:  # fmt: skip
        store.record_event(model, replica, event)
    assert [e["event"] for e in store.events(model_key="Model/default/m")] == ["Starting", "Ready"]
    assert [e["replica"] for e in store.events(1)] == ["m-1"]
    [(key, stamp)] = store.stamps("Model").items()
    assert key == m.key and stamp["generation"] == 1
    assert stamp["createdAt"] == stamp["updatedAt"]
    assert str(stamp["createdAt"]).endswith("Z")
    assert store.stamps("Prompt") == {}
