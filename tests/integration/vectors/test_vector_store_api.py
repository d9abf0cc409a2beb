"""Vector stores on a real `kapell up` of examples/vector-store.yaml (plus two stores made to
fail), driven by the official openai client.

The embedding Models are ``hashembed`` engine replicas (hashed n-grams, no download); a
declared VectorStore and an API-created one are filled with files, searched, and refused
bad input with a 4xx that names the problem, leaving what they hold intact.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.integration.local.conftest import Instance, kapell_up

__all__ = ["kapell_up"]

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "vector-store.yaml"
SPEC = (
    EXAMPLE.read_text()
    + """\
---
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: embed-small}
spec:
  source: {uri: hash-ngrams-64}
  engine: {name: hashembed}
  scaling: {minReplicas: 1, maxReplicas: 1}
---
apiVersion: kapell.dev/v1alpha1
kind: VectorStore
metadata: {name: misfit}
spec: {embeddingModel: embed-small, dimensions: 256}
---
apiVersion: kapell.dev/v1alpha1
kind: VectorStore
metadata: {name: orphan}
spec: {embeddingModel: nowhere, dimensions: 256}
"""
)

FACTS = {
    "volcanoes.txt": "Volcanoes erupt when magma rises through the crust. Basalt lava flows "
    "are hot and runny; rhyolite magma is thick and explodes.",
    "tea.txt": "Green tea is steamed or pan-fired soon after picking, while black tea leaves "
    "are oxidised before drying. Brewing temperature matters for green tea.",
    "trains.txt": "The locomotive pulled forty freight wagons across the mountain pass; "
    "rack railways use a toothed rail to climb steep gradients.",
}

StartFn = Callable[..., Instance]


def test_vector_stores(kapell_up: StartFn) -> None:
    """One `kapell up` for both kinds of store (its start is most of the time)."""
    client = _client(kapell_up(SPEC, ready=2))
    _declared_store_filled_searched_and_guarded(client)
    _api_created_store_lifecycle(client)


def _client(instance: Instance) -> openai.OpenAI:
    return openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="unused", max_retries=0)


def _upload(client: openai.OpenAI, store_id: str, name: str, text: bytes) -> str:
    done = client.vector_stores.files.upload_and_poll(
        vector_store_id=store_id, file=(name, io.BytesIO(text))
    )
    assert done.status == "completed"
    return done.id


def _declared_store_filled_searched_and_guarded(client: openai.OpenAI) -> None:
    stores = {s.id: s for s in client.vector_stores.list()}
    assert {"handbook", "misfit", "orphan"} <= set(stores)
    for name, text in FACTS.items():
        _upload(client, "handbook", name, text.encode())
    assert client.vector_stores.retrieve("handbook").file_counts.completed == 3

    page = client.vector_stores.search("handbook", query="how does black tea get oxidised?")
    results = list(page)
    assert results[0].filename == "tea.txt"
    assert "oxidised" in results[0].content[0].text
    assert results[0].score > results[-1].score

    # A file that is not text: 400 naming it; the store keeps its three files.
    with pytest.raises(openai.BadRequestError, match=r"blob\.bin.*not UTF-8 text"):
        _upload(client, "handbook", "blob.bin", b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    # A declared store cannot be deleted through the API.
    with pytest.raises(openai.ConflictError, match="declared by the VectorStore"):
        client.vector_stores.delete("handbook")
    assert client.vector_stores.retrieve("handbook").file_counts.completed == 3
    again = list(client.vector_stores.search("handbook", query="rack railway gradients"))
    assert again[0].filename == "trains.txt"

    # Unknown store id, embedding model absent, or answering another dimension: 4xx naming it.
    with pytest.raises(openai.NotFoundError, match="vector store 'vs_nope' does not exist"):
        client.vector_stores.search("vs_nope", query="tea")
    with pytest.raises(openai.BadRequestError, match="embedding model 'nowhere' does not exist"):
        _upload(client, "orphan", "tea.txt", FACTS["tea.txt"].encode())
    with pytest.raises(openai.BadRequestError, match=r"256-dimensional.*'embed-small'.*64"):
        _upload(client, "misfit", "tea.txt", FACTS["tea.txt"].encode())
    assert client.vector_stores.retrieve("misfit").file_counts.total == 0


def _api_created_store_lifecycle(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="does not match embedding model 'embed'"):
        client.vector_stores.create(name="x", extra_body={"embedding_model": "embed",
                                                          "dimensions": 64})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="needs an embedding model"):
        client.vector_stores.create(name="x")
    store = client.vector_stores.create(name="notes", extra_body={"embedding_model": "embed"})
    assert store.id.startswith("vs_")
    uploaded = client.files.create(file=("volcanoes.txt", FACTS["volcanoes.txt"].encode()),
                                   purpose="assistants")  # fmt: skip
    member = client.vector_stores.files.create(
        vector_store_id=store.id,
        file_id=uploaded.id,
        attributes={"topic": "geology"},
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
        },
    )
    assert member.status == "completed"
    hits = list(client.vector_stores.search(store.id, query="magma basalt", max_num_results=3))
    assert hits[0].file_id == uploaded.id and hits[0].attributes == {"topic": "geology"}
    assert [f.id for f in client.vector_stores.files.list(store.id)] == [uploaded.id]

    client.vector_stores.files.delete(file_id=uploaded.id, vector_store_id=store.id)
    assert list(client.vector_stores.search(store.id, query="magma basalt")) == []
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    assert client.files.delete(uploaded.id).deleted
