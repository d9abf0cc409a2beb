"""The HTTP surface: ``/v1/files`` and ``/v1/vector_stores`` in OpenAI's shapes.

Objects are shaped as the official ``openai`` client parses them (``FileObject``,
``VectorStore``, ``VectorStoreFile``, the search page). Files are processed when they are added,
so a store file is ``completed`` in the answer to its ``POST`` (or refused with a 4xx).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kapell.gateway.errors import GatewayError
from kapell.gateway.vectors.catalog import FileRecord, MemberRecord, StoreRecord
from kapell.gateway.vectors.chunking import Chunking
from kapell.gateway.vectors.service import VectorStores

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_RESULTS = 50
PATH_PREFIXES = ("/v1/files", "/v1/vector_stores")
Authenticate = Callable[[str | None], object]
"""Raises ``GatewayError`` (401) when the request's key is not accepted."""


def vector_routes(stores: VectorStores, authenticate: Authenticate) -> list[Route]:
    """The routes, each answering errors in OpenAI's shape."""
    api = _Api(stores, authenticate)
    return [
        Route("/v1/files", api.upload, methods=["POST"]),
        Route("/v1/files", api.list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", api.get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", api.delete_file, methods=["DELETE"]),
        Route("/v1/vector_stores", api.create_store, methods=["POST"]),
        Route("/v1/vector_stores", api.list_stores, methods=["GET"]),
        Route("/v1/vector_stores/{store_id}", api.get_store, methods=["GET"]),
        Route("/v1/vector_stores/{store_id}", api.delete_store, methods=["DELETE"]),
        Route("/v1/vector_stores/{store_id}/files", api.add_file, methods=["POST"]),
        Route("/v1/vector_stores/{store_id}/files", api.list_members, methods=["GET"]),
        Route("/v1/vector_stores/{store_id}/files/{file_id}", api.get_member, methods=["GET"]),
        Route(
            "/v1/vector_stores/{store_id}/files/{file_id}", api.remove_member, methods=["DELETE"]
        ),
        Route("/v1/vector_stores/{store_id}/search", api.search, methods=["POST"]),
    ]


def _answers(handler: Callable[..., Any]) -> Callable[[Any, Request], Any]:
    """Authenticate, run, and turn a ``GatewayError`` into its OpenAI error response."""

    async def route(self: _Api, request: Request) -> Response:
        try:
            self.authenticate(request.headers.get("authorization"))
            result = await handler(self, request)
        except GatewayError as error:
            return Response(error.body(), error.status, error.headers, "application/json")
        return JSONResponse(result)

    return route


class _Api:
    def __init__(self, stores: VectorStores, authenticate: Authenticate) -> None:
        self.stores = stores
        self.authenticate = authenticate

    # --- files -------------------------------------------------------------------------------

    @_answers
    async def upload(self, request: Request) -> dict[str, Any]:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_UPLOAD_BYTES:
            raise GatewayError(413, f"a file may have at most {MAX_UPLOAD_BYTES} bytes")
        async with request.form(max_part_size=MAX_UPLOAD_BYTES) as form:
            upload = form.get("file")
            purpose = form.get("purpose") or "assistants"
            if upload is None or isinstance(upload, str):
                raise GatewayError(
                    400, "expected a multipart form with a 'file' part", param="file",
                    code="bad_file",
                )  # fmt: skip
            content = await upload.read()
            record = self.stores.catalog.put_file(
                upload.filename or "upload", str(purpose), content
            )
        return _file(record)

    @_answers
    async def list_files(self, request: Request) -> dict[str, Any]:
        return _page([_file(f) for f in self.stores.catalog.files()])

    @_answers
    async def get_file(self, request: Request) -> dict[str, Any]:
        return _file(self.stores.file(request.path_params["file_id"]))

    @_answers
    async def delete_file(self, request: Request) -> dict[str, Any]:
        file_id = request.path_params["file_id"]
        await self.stores.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # --- stores ------------------------------------------------------------------------------

    @_answers
    async def create_store(self, request: Request) -> dict[str, Any]:
        body = await _json(request)
        metric = body.get("metric", "cosine")
        if metric not in ("cosine", "dot", "l2"):
            raise GatewayError(400, "metric: expected cosine, dot or l2", param="metric")
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise GatewayError(400, "dimensions: expected a positive integer", param="dimensions")
        store = await self.stores.create(
            str(body.get("name") or ""),
            body.get("embedding_model"),
            dimensions,
            metric,
            dict(body.get("metadata") or {}),
            request.headers.get("authorization"),
        )
        chunking = _chunking(body)
        for file_id in body.get("file_ids") or []:
            await self.stores.add_file(
                store.id, file_id, chunking, {}, request.headers.get("authorization")
            )
        return self._store(store)

    @_answers
    async def list_stores(self, request: Request) -> dict[str, Any]:
        return _page([self._store(s) for s in self.stores.catalog.stores()])

    @_answers
    async def get_store(self, request: Request) -> dict[str, Any]:
        return self._store(self.stores.get(request.path_params["store_id"]))

    @_answers
    async def delete_store(self, request: Request) -> dict[str, Any]:
        store_id = request.path_params["store_id"]
        await self.stores.delete(store_id)
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    def _store(self, store: StoreRecord) -> dict[str, Any]:
        members = self.stores.catalog.members(store.id)
        counts = {"in_progress": 0, "completed": len(members), "failed": 0, "cancelled": 0}
        return {
            "id": store.id,
            "object": "vector_store",
            "created_at": store.created_at,
            "name": store.name,
            "usage_bytes": sum(m.usage_bytes for m in members),
            "file_counts": {**counts, "total": len(members)},
            "status": "completed",
            "last_active_at": store.created_at,
            "expires_after": None,
            "expires_at": None,
            "metadata": store.metadata,
            # kapell's own fields (the openai client keeps unknown fields as extras):
            "embedding_model": store.embedding_model,
            "dimensions": store.dimensions,
            "metric": store.metric,
            "storage": store.storage,
            "declared": store.declared,
        }

    # --- files in stores ---------------------------------------------------------------------

    @_answers
    async def add_file(self, request: Request) -> dict[str, Any]:
        body = await _json(request)
        file_id = body.get("file_id")
        if not isinstance(file_id, str):
            raise GatewayError(400, "file_id: expected a file id", param="file_id")
        attributes = body.get("attributes") or {}
        member = await self.stores.add_file(
            request.path_params["store_id"], file_id, _chunking(body), dict(attributes),
            request.headers.get("authorization"),
        )  # fmt: skip
        return _member(member)

    @_answers
    async def list_members(self, request: Request) -> dict[str, Any]:
        store_id = request.path_params["store_id"]
        self.stores.get(store_id)
        return _page([_member(m) for m in self.stores.catalog.members(store_id)])

    @_answers
    async def get_member(self, request: Request) -> dict[str, Any]:
        params = request.path_params
        return _member(self.stores.member(params["store_id"], params["file_id"]))

    @_answers
    async def remove_member(self, request: Request) -> dict[str, Any]:
        params = request.path_params
        await self.stores.remove_file(params["store_id"], params["file_id"])
        return {"id": params["file_id"], "object": "vector_store.file.deleted", "deleted": True}

    # --- search ------------------------------------------------------------------------------

    @_answers
    async def search(self, request: Request) -> dict[str, Any]:
        body = await _json(request)
        query = body.get("query")
        if isinstance(query, list) and all(isinstance(q, str) for q in query):
            query = " ".join(query)
        if not isinstance(query, str) or not query.strip():
            raise GatewayError(400, "query: expected a non-empty string", param="query")
        k = body.get("max_num_results", 10)
        if not isinstance(k, int) or not 1 <= k <= MAX_RESULTS:
            raise GatewayError(
                400, f"max_num_results: expected 1..{MAX_RESULTS}", param="max_num_results"
            )
        hits = await self.stores.search(
            request.path_params["store_id"], query, k, request.headers.get("authorization")
        )
        data = [
            {
                "file_id": h.hit.chunk.file_id,
                "filename": h.filename,
                "score": h.hit.score,
                "attributes": h.attributes,
                "content": [{"type": "text", "text": h.hit.chunk.text}],
            }
            for h in hits
        ]
        return {
            "object": "vector_store.search_results.page",
            "search_query": [query],
            "data": data,
            "has_more": False,
            "next_page": None,
        }


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GatewayError(400, "expected a JSON object as the body", code="invalid_request")
    return body


def _chunking(body: dict[str, Any]) -> Chunking:
    strategy = body.get("chunking_strategy") or {"type": "auto"}
    if strategy.get("type") == "auto":
        return Chunking()
    static = strategy.get("static") or {}
    try:
        return Chunking(
            int(static.get("max_chunk_size_tokens", 800)),
            int(static.get("chunk_overlap_tokens", 400)),
        )
    except (TypeError, ValueError) as exc:
        raise GatewayError(400, f"chunking_strategy: {exc}", param="chunking_strategy") from None


def _page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


def _file(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.size,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
    }


def _member(member: MemberRecord) -> dict[str, Any]:
    return {
        "id": member.file_id,
        "object": "vector_store.file",
        "created_at": member.created_at,
        "vector_store_id": member.store_id,
        "usage_bytes": member.usage_bytes,
        "status": "completed",
        "last_error": None,
        "attributes": member.attributes,
        "chunking_strategy": {"type": "static", "static": {}},
    }
