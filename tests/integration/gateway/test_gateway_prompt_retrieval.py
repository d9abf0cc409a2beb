"""A Prompt that retrieves: the gateway searches the vector store for the caller's question and
the engine receives the template filled with the chunks found (no glue code for the user).

Real parts: the gateway with its vector store API (LanceDB files in a temp dir), the hashembed
engine's app as the embedding Model behind the gateway's own ``/v1/embeddings``, and the
official openai client filling the store and calling the prompt. The chat engine is the stub
that records what it receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from conftest import LoopThread, Stack
from kapell.api import ObjectMeta, VectorStore
from kapell.api.kinds import VectorStoreSpec
from kapell.api.prompt import Prompt, PromptVersion
from kapell.engines.hashembed.backend import HashEmbedBackend
from kapell.engines.openai_server.app import create_app as engine_app
from kapell.gateway.config import GatewayConfig

pytest.importorskip("lancedb", reason="the embedded vector store needs kapell[vectors]")

HANDBOOK = [
    "Expense reports are due on the fifth working day of each month.",
    "Laptops are replaced every three years by the IT desk.",
    "Parental leave is sixteen weeks at full pay for every parent.",
]
TEMPLATE = "Answer from the handbook.\n{{context}}\nQuestion: {{question}}"


@pytest.fixture
def stack(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(loop_thread, GatewayConfig(), vectors_dir=tmp_path / "vectors")
    backend = HashEmbedBackend(256)
    loop_thread.run(backend.start())
    stack.set_endpoints("embed", [loop_thread.serve(engine_app(backend, "embed"))])
    stack.set_endpoints("chat", [stack.add_engine("chat")])
    assert stack.gateway.vectors is not None
    stack.loop_thread.call(
        lambda: stack.gateway.vectors.declare(  # type: ignore[union-attr]
            [VectorStore(metadata=ObjectMeta(name="handbook"),
                         spec=VectorStoreSpec(embedding_model="embed", dimensions=256))]
        )
    )  # fmt: skip
    yield stack
    stack.gateway.vectors.close()


def _serve_prompt(stack: Stack, retrieval: dict[str, object]) -> None:
    prompt = Prompt.model_validate({
        "metadata": {"name": "hr"},
        "spec": {"model": "chat", "template": TEMPLATE, "retrieval": retrieval},
    })  # fmt: skip
    version = PromptVersion.of(prompt.spec)
    stack.loop_thread.call(lambda: stack.gateway.prompts.update([(prompt, [version])]))


def test_the_engine_gets_the_chunks_that_answer_the_question(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    store = client.vector_stores.retrieve("handbook")
    for i, sentence in enumerate(HANDBOOK):
        uploaded = client.files.create(file=(f"s{i}.txt", sentence.encode()), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)
    _serve_prompt(stack, {"vectorStore": "handbook", "topK": 1})

    client.chat.completions.create(
        model="ignored", messages=[{"role": "user", "content": "thanks"}], max_tokens=3,
        extra_body={"prompt": {"id": "hr", "variables": {
            "question": "how many weeks of parental leave?"}}},
    )  # fmt: skip
    (received,) = stack.engines["chat"].received
    system = received["messages"][0]["content"]
    assert "sixteen weeks" in system and "Laptops" not in system and "Expense" not in system
    assert system.endswith("Question: how many weeks of parental leave?")

    with pytest.raises(openai.BadRequestError, match="variable 'question'"):
        client.chat.completions.create(
            model="ignored", messages=[], extra_body={"prompt": {"id": "hr", "variables": {}}}
        )
    _serve_prompt(stack, {"vectorStore": "gone"})
    with pytest.raises(openai.NotFoundError, match="vector store 'gone' does not exist"):
        client.chat.completions.create(
            model="ignored", messages=[],
            extra_body={"prompt": {"id": "hr", "variables": {"question": "q"}}},
        )  # fmt: skip
    assert len(stack.engines["chat"].received) == 1, "a failed retrieval reached the engine"
