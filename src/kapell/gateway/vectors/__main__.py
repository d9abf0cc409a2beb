"""``python -m kapell.gateway.vectors``: one declared vector store served on its own.

This is the sidecar a store runs as on Kubernetes, beside its embedding model's engine in the
same pod: the store's data on a PersistentVolumeClaim at ``--data``, embeddings from
``--embeddings-url`` (the engine container at ``http://127.0.0.1:8000`` by default, or a
gateway). It serves the same ``/v1/files`` and ``/v1/vector_stores`` routes as ``kapell up``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kapell.api import ObjectMeta, VectorStore
from kapell.api.kinds import VectorStorage, VectorStoreSpec
from kapell.gateway.errors import GatewayError
from kapell.gateway.vectors.routes import vector_routes
from kapell.gateway.vectors.service import VectorStores


def _open(authorization: str | None) -> None:
    """The sidecar is reached inside the cluster only; the gateway in front authenticates."""


def create_app(store: VectorStore, data: Path, embeddings_url: str) -> Starlette:
    """The store's API, embedding through ``embeddings_url``'s ``/v1/embeddings``."""
    session: list[aiohttp.ClientSession] = []

    async def embed(
        model: str, texts: Sequence[str], authorization: str | None
    ) -> list[list[float]]:
        async with session[0].post(
            embeddings_url.rstrip("/") + "/v1/embeddings",
            json={"model": model, "input": list(texts)},
        ) as response:
            answer = await response.json(content_type=None)
        if response.status != 200:
            error = (answer or {}).get("error") or {}
            raise GatewayError(
                response.status, str(error.get("message") or f"HTTP {response.status}"),
                code=error.get("code"),
            )  # fmt: skip
        return [row["embedding"] for row in sorted(answer["data"], key=lambda r: r["index"])]

    stores = VectorStores(data, embed)
    stores.declare([store])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        session.append(aiohttp.ClientSession())
        try:
            yield
        finally:
            await session[0].close()
            stores.close()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [*vector_routes(stores, _open), Route("/healthz", health, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kapell.gateway.vectors", description=__doc__)
    parser.add_argument("--store", required=True, help="the VectorStore's name (the store id)")
    parser.add_argument("--embedding-model", required=True)
    parser.add_argument("--dimensions", type=int, required=True)
    parser.add_argument("--metric", choices=("cosine", "dot", "l2"), default="cosine")
    parser.add_argument("--data", type=Path, required=True, help="the store's directory")
    parser.add_argument("--pgvector-url", help="postgresql://... (default: embedded storage)")
    parser.add_argument("--embeddings-url", default="http://127.0.0.1:8000")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    store = VectorStore(
        metadata=ObjectMeta(name=args.store),
        spec=VectorStoreSpec(
            embedding_model=args.embedding_model, dimensions=args.dimensions,
            metric=args.metric,
            storage=VectorStorage(type="pgvector", url=args.pgvector_url)
            if args.pgvector_url
            else VectorStorage(),
        ),
    )  # fmt: skip
    from kapell.gateway.server import serve

    serve(create_app(store, args.data, args.embeddings_url), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
