"""Retrieval for prompts: the request's query text in, its variables with the top-k chunks out.

The seam a Prompt's renderer calls before it fills the template: ``with_retrieved_context``
takes the variables a caller sent and returns them with ``contextVariable`` set to the chunks
the store finds for ``queryVariable``, so the template needs nothing but ``{{context}}``.
"""

from __future__ import annotations

from typing import Any

from kapell.api.prompt import PromptRetrieval
from kapell.gateway.errors import GatewayError
from kapell.gateway.vectors.service import VectorStores

SEPARATOR = "\n\n---\n\n"
"""Between chunks in the context: a line a model reads as a boundary, rare in prose."""


async def retrieve(
    stores: VectorStores, store_id: str, query: str, top_k: int, authorization: str | None
) -> list[str]:
    """The texts of the ``top_k`` chunks closest to ``query``, best first."""
    hits = await stores.search(store_id, query, top_k, authorization)
    return [h.hit.chunk.text for h in hits]


async def with_retrieved_context(
    variables: dict[str, Any],
    retrieval: PromptRetrieval,
    stores: VectorStores,
    authorization: str | None,
    prompt: str,
) -> dict[str, Any]:
    """``variables`` plus the retrieved context; a 400 naming the prompt and the variable when
    the query is missing, and the store's own 4xx (unknown store, absent model) otherwise."""
    query = variables.get(retrieval.query_variable)
    if not isinstance(query, str) or not query.strip():
        raise GatewayError(
            400,
            f"prompt '{prompt}' retrieves from vector store '{retrieval.vector_store}' by the "
            f"variable '{retrieval.query_variable}': send it as a non-empty string",
            code="missing_variable",
            param=f"prompt.variables.{retrieval.query_variable}",
        )
    if retrieval.context_variable in variables:
        raise GatewayError(
            400,
            f"prompt '{prompt}' fills the variable '{retrieval.context_variable}' from its "
            "vector store; do not send it",
            code="unknown_variable",
            param=f"prompt.variables.{retrieval.context_variable}",
        )
    chunks = await retrieve(stores, retrieval.vector_store, query, retrieval.top_k, authorization)
    return {**variables, retrieval.context_variable: SEPARATOR.join(chunks)}
