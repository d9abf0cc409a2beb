"""Retrieval for prompts: a query variable in, the store's best chunks in the context out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kapell.api.prompt import PromptRetrieval
from kapell.gateway.errors import GatewayError
from kapell.gateway.vectors.chunking import Chunking
from kapell.gateway.vectors.retrieval import SEPARATOR, with_retrieved_context

from .stores import declared, stores_in

HANDBOOK = (
    "Expense reports are due on the fifth working day of each month. "
    "Laptops are replaced every three years by the IT desk. "
    "Parental leave is sixteen weeks at full pay for every parent."
)


def test_the_context_holds_the_chunks_that_answer_the_question(tmp_path: Path) -> None:
    async def run() -> None:
        stores = stores_in(tmp_path, declared("handbook"))
        for i, sentence in enumerate(HANDBOOK.split(". ")):  # one chunk per sentence
            file = stores.catalog.put_file(f"s{i}.txt", "assistants", sentence.encode())
            await stores.add_file("handbook", file.id, Chunking(), {}, None)
        retrieval = PromptRetrieval(vector_store="handbook", top_k=1)
        filled = await with_retrieved_context(
            {"question": "how many weeks of parental leave?"}, retrieval, stores, None, "hr"
        )
        assert filled["question"] == "how many weeks of parental leave?"
        assert "sixteen weeks" in filled["context"] and "Laptops" not in filled["context"]

        two = PromptRetrieval(vector_store="handbook", top_k=2, query_variable="q",
                              context_variable="facts")  # fmt: skip
        filled = await with_retrieved_context({"q": "when are laptops replaced"}, two, stores,
                                              None, "hr")  # fmt: skip
        first, second = filled["facts"].split(SEPARATOR)
        assert "Laptops" in first and "Laptops" not in second
        stores.close()

    asyncio.run(run())


def test_bad_retrieval_requests_name_what_is_wrong(tmp_path: Path) -> None:
    async def run() -> None:
        stores = stores_in(tmp_path, declared("handbook"))
        retrieval = PromptRetrieval(vector_store="handbook")
        with pytest.raises(GatewayError, match="variable 'question': send it") as missing:
            await with_retrieved_context({}, retrieval, stores, None, "hr")
        assert missing.value.status == 400
        with pytest.raises(GatewayError, match="fills the variable 'context'"):
            await with_retrieved_context({"question": "q", "context": "x"}, retrieval, stores,
                                         None, "hr")  # fmt: skip
        elsewhere = PromptRetrieval(vector_store="gone")
        with pytest.raises(GatewayError, match="vector store 'gone' does not exist") as unknown:
            await with_retrieved_context({"question": "q"}, elsewhere, stores, None, "hr")
        assert unknown.value.status == 404
        stores.close()

    asyncio.run(run())
