"""The SQLite store: create, update, unchanged, status kept apart from spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapell.api import Model, Prompt, Resource
from kapell.api.errors import ConflictError
from kapell.api.loader import load_text
from kapell.api.tenant import new_api_key
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


TENANT = """\
apiVersion: kapell.dev/v1alpha1
kind: Tenant
metadata: {name: t}
spec: {models: [m]}
"""


def test_keys_are_stored_by_id_and_go_with_their_tenant(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    [tenant] = load_text(TENANT)
    store.apply(tenant)
    plain, key = new_api_key("default", "t", ["m"], "now")
    _, other = new_api_key("default", "u", [], "now")
    assert store.add_key(key) and store.add_key(other) and not store.add_key(key)
    assert sorted(k.id for k in store.api_keys()) == sorted([key.id, other.id])
    written = b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))  # the WAL too
    assert key.sha256.encode() in written and plain.encode() not in written
    assert store.remove_key(other.id) == other and store.remove_key(other.id) is None
    store.delete(tenant.key)
    assert store.api_keys() == [], "deleting a Tenant deletes its keys"


def test_the_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.touch(mode=0o644)
    SQLiteStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


PROMPT = """\
apiVersion: kapell.dev/v1alpha1
kind: Prompt
metadata: {name: greet}
spec: {model: m, version: VERSION, template: "TEMPLATE"}
"""


def _prompt(version: int, template: str) -> Resource:
    [prompt] = load_text(PROMPT.replace("VERSION", str(version)).replace("TEMPLATE", template))
    return prompt


def test_every_prompt_version_is_kept_and_none_changes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store.apply(_prompt(1, "Hi {{name}}")) == "created"
    assert store.apply(_prompt(2, "Hello {{name}}")) == "configured"
    with pytest.raises(ConflictError, match="version 1 is already applied with another template"):
        store.apply(_prompt(1, "Yo {{name}}"))
    assert [v.template for v in store.prompt_versions("Prompt/default/greet")] == [
        "Hi {{name}}",
        "Hello {{name}}",
    ]
    stored = store.get("Prompt/default/greet")
    assert isinstance(stored, Prompt) and stored.spec.version == 2, "a refused apply changed it"
    assert store.apply(_prompt(1, "Hi {{name}}")) == "configured"  # back to 1: allowed
    assert store.delete("Prompt/default/greet")
    assert store.prompt_versions("Prompt/default/greet") == []
