"""The local admin API: what `kapell apply | get | describe | delete | logs | status | down`
and `kapell keys` talk to (``logs`` reads replica, access and TrainingJob driver logs).

It listens on loopback only. Bodies are JSON; resources arrive already validated by the CLI
(which knows file names and lines) and are validated again here, since any local process may call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kapell.api import KINDS, Resource, Tenant
from kapell.api.errors import ConflictError
from kapell.api.tenant import ApiKey, key_problem
from kapell.backends.local import logfiles
from kapell.backends.local.replicas import LocalReplicas
from kapell.backends.local.store import SQLiteStore

ADMIN_PREFIX = "/admin/v1"


class AdminContext:
    """What the admin API reads and acts on, wired by the composition root."""

    def __init__(
        self,
        store: SQLiteStore,
        replicas: LocalReplicas,
        enqueue: Callable[[str], None],
        shutdown: Callable[[], Awaitable[None] | None],
        info: dict[str, Any],
        usage: Callable[[], list[dict[str, Any]]] = list,
        access_log_path: Callable[[str], Path] | None = None,
        training_log_path: Callable[[str, str], Path] | None = None,
        spend: Callable[[str | None], dict[str, Any]] | None = None,
        drift: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.replicas = replicas
        self.enqueue = enqueue
        self.shutdown = shutdown
        self.info = info
        self.usage = usage
        self.access_log_path = access_log_path
        self.training_log_path = training_log_path
        self.spend = spend
        self.drift = drift


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _body(resource: Resource) -> dict[str, Any]:
    return resource.model_dump(mode="json", by_alias=True)


def _int(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _read_log(request: Request, path: Path, missing: str) -> Response:
    """Lines of a log file: the last ``tail`` (default 200), or those after byte ``offset``
    (to follow it). ``follow=1`` leaves out a last line without its newline, which the next
    read returns whole. Each answer carries the ``offset`` to read on from."""
    try:
        offset = _int(request, "offset", None)
        tail = _int(request, "tail", 200)
    except ValueError as exc:
        return _error(400, str(exc))
    assert tail is not None
    following = offset is not None or request.query_params.get("follow") == "1"
    try:
        if offset is not None:
            lines, end = logfiles.read_from(path, offset)
        else:
            lines, end = logfiles.tail(path, tail, partial=not following)
    except FileNotFoundError:
        if not following:
            return _error(404, missing)
        lines, end = [], 0  # not written yet: a follower waits for it
    return JSONResponse({"path": str(path), "lines": lines, "offset": end})


def create_admin_app(ctx: AdminContext) -> Starlette:
    async def status(request: Request) -> Response:
        replicas = [asdict(r) for r in ctx.replicas.all()]
        return JSONResponse(
            {
                **ctx.info,
                "replicas": replicas,
                "resources": [_body(r) for r in ctx.store.resources()],
                "events": ctx.store.events(20),
            }
        )

    async def apply(request: Request) -> Response:
        try:
            documents = (await request.json())["resources"]
            resources = [KINDS[doc["kind"]].model_validate(doc) for doc in documents]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            return _error(400, f"invalid apply request: {exc}")
        results = []
        for resource in resources:
            try:
                outcome = ctx.store.apply(resource)
            except ConflictError as exc:
                return _error(409, str(exc))
            ctx.enqueue(resource.key)
            results.append({"key": resource.key, "outcome": outcome})
        return JSONResponse({"results": results})

    async def list_resources(request: Request) -> Response:
        kind = request.query_params.get("kind")
        if kind is not None and kind not in KINDS:
            return _error(400, f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        return JSONResponse(
            {
                "items": [_body(r) for r in ctx.store.resources(kind)],
                "stamps": ctx.store.stamps(kind),
            }
        )

    async def describe(request: Request) -> Response:
        p = request.path_params
        key = f"{p['kind']}/{p['namespace']}/{p['name']}"
        resource = ctx.store.get(key)
        if resource is None:
            return _error(404, f"{key} not found")
        try:
            limit = _int(request, "events", 20)
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse(
            {
                "resource": _body(resource),
                "stamps": ctx.store.stamps(resource.kind).get(key, {}),
                "replicas": [asdict(r) for r in ctx.replicas.replicas(key)],
                "events": ctx.store.events(limit or 0, model_key=key),
            }
        )

    async def one_resource(request: Request) -> Response:
        p = request.path_params
        key = f"{p['kind']}/{p['namespace']}/{p['name']}"
        if request.method == "DELETE":
            if not ctx.store.delete(key):
                return _error(404, f"{key} not found")
            ctx.enqueue(key)
            return JSONResponse({"deleted": key})
        resource = ctx.store.get(key)
        if resource is None:
            return _error(404, f"{key} not found")
        return JSONResponse(_body(resource))

    async def logs(request: Request) -> Response:
        replica_id = request.path_params["replica"]
        path = ctx.replicas.log_path(replica_id)
        return _read_log(request, path, f"no log for replica {replica_id}")

    async def access_log(request: Request) -> Response:
        model = request.path_params["model"]
        if ctx.access_log_path is None:
            return _error(404, "this instance keeps no access log")
        return _read_log(
            request,
            ctx.access_log_path(model),
            f"model {model!r} has no access log: no request yet",
        )

    async def training_log(request: Request) -> Response:
        p = request.path_params
        if ctx.training_log_path is None:
            return _error(404, "this instance runs no TrainingJob")
        return _read_log(
            request,
            ctx.training_log_path(p["namespace"], p["name"]),
            f"TrainingJob {p['name']} has no driver log yet: not submitted",
        )

    async def list_keys(request: Request) -> Response:
        return JSONResponse({"items": [k.model_dump(by_alias=True) for k in ctx.store.api_keys()]})

    async def create_key(request: Request) -> Response:
        """Store a key's record (the CLI made the key and sends only its hash)."""
        try:
            key = ApiKey.model_validate(await request.json())
        except (ValueError, ValidationError) as exc:
            return _error(400, f"invalid key record: {exc}")
        tenant_key = f"Tenant/{key.namespace}/{key.tenant}"
        tenant = ctx.store.get(tenant_key)
        problem = key_problem(tenant if isinstance(tenant, Tenant) else None, key)
        if problem is not None:
            return _error(404 if tenant is None else 400, problem)
        if not ctx.store.add_key(key):
            return _error(409, f"a key with id {key.id} exists already")
        ctx.enqueue(tenant_key)
        return JSONResponse(key.model_dump(by_alias=True), status_code=201)

    async def revoke_key(request: Request) -> Response:
        key_id = request.path_params["id"]
        key = ctx.store.remove_key(key_id)
        if key is None:
            return _error(404, f"no API key with id {key_id!r}; see `kapell keys list`")
        ctx.enqueue(f"Tenant/{key.namespace}/{key.tenant}")
        return JSONResponse(key.model_dump(by_alias=True))

    async def usage(request: Request) -> Response:
        return JSONResponse({"models": ctx.usage()})

    async def spend(request: Request) -> Response:
        if ctx.spend is None:
            return _error(404, "this instance accounts no spend")
        return JSONResponse(ctx.spend(request.query_params.get("namespace")))

    async def drift(request: Request) -> Response:
        if ctx.drift is None:
            return _error(404, "this instance has no gateway that tracks drift")
        return JSONResponse(ctx.drift())

    async def shutdown(request: Request) -> Response:
        result = ctx.shutdown()
        if asyncio.iscoroutine(result):
            asyncio.get_running_loop().create_task(result)
        return JSONResponse({"shutting_down": True})

    return Starlette(
        routes=[
            Route(f"{ADMIN_PREFIX}/status", status),
            Route(f"{ADMIN_PREFIX}/apply", apply, methods=["POST"]),
            Route(f"{ADMIN_PREFIX}/resources", list_resources),
            Route(
                f"{ADMIN_PREFIX}/resources/{{kind}}/{{namespace}}/{{name}}",
                one_resource,
                methods=["GET", "DELETE"],
            ),
            Route(
                f"{ADMIN_PREFIX}/describe/{{kind}}/{{namespace}}/{{name}}",
                describe,
                methods=["GET"],
            ),
            Route(f"{ADMIN_PREFIX}/logs/{{replica}}", logs),
            Route(f"{ADMIN_PREFIX}/access/{{model}}", access_log),
            Route(f"{ADMIN_PREFIX}/keys", list_keys, methods=["GET"]),
            Route(f"{ADMIN_PREFIX}/keys", create_key, methods=["POST"]),
            Route(f"{ADMIN_PREFIX}/keys/{{id}}", revoke_key, methods=["DELETE"]),
            Route(f"{ADMIN_PREFIX}/trainlogs/{{namespace}}/{{name}}", training_log),
            Route(f"{ADMIN_PREFIX}/usage", usage),
            Route(f"{ADMIN_PREFIX}/spend", spend),
            Route(f"{ADMIN_PREFIX}/drift", drift),
            Route(f"{ADMIN_PREFIX}/shutdown", shutdown, methods=["POST"]),
        ]
    )
