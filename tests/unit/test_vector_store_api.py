"""The VectorStore resource: storage choices and the errors a user sees for bad ones."""

from __future__ import annotations

import pytest

from kapell.api.errors import SpecError
from kapell.api.kinds import VectorStore
from kapell.api.loader import load_text

HEAD = "apiVersion: kapell.dev/v1alpha1\nkind: VectorStore\nmetadata: {name: docs}\n"


def test_defaults_are_an_embedded_store() -> None:
    [store] = load_text(HEAD + "spec: {embeddingModel: embed, dimensions: 256}\n", "vs.yaml")
    assert isinstance(store, VectorStore)
    assert (store.spec.metric, store.spec.storage.type, store.spec.storage.size) == (
        "cosine", "embedded", "1Gi",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("{type: pgvector}", "pgvector takes url"),
        ("{url: 'postgresql://h/db'}", "pgvector takes url"),
        ("{type: pgvector, url: 'mysql://h/db'}", "expected postgresql://"),
        ("{type: milvus}", "storage.type"),
    ],
)
def test_bad_storage_is_reported_with_its_line(storage: str, message: str) -> None:
    text = HEAD + f"spec:\n  embeddingModel: embed\n  dimensions: 8\n  storage: {storage}\n"
    with pytest.raises(SpecError, match=message) as info:
        load_text(text, "vs.yaml")
    assert "vs.yaml:" in str(info.value)
