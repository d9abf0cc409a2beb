"""The gateway: an OpenAI-compatible ASGI app in front of every model's replicas.

``Gateway`` composes the parts: the proxy exchange (``proxy``: a request's trip to a replica
and back, through an ``upstream.Upstream``), the balancer (``balancer``: which replica), the
activator (``activator``: admission while replicas start), tenancy, metering and metrics.
The proxied paths are dispatched straight to their ``ProxyRoute``; Starlette provides the other
routes, lifespan and error pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kapell.api import Model
from kapell.gateway.activator import ModelGate
from kapell.gateway.balancer import Balancer
from kapell.gateway.config import GatewayConfig
from kapell.gateway.drift import DriftMonitor
from kapell.gateway.endpoints import EndpointSource
from kapell.gateway.errors import GatewayError
from kapell.gateway.loopback import post_json
from kapell.gateway.metering import Meter
from kapell.gateway.openapi import openapi_document
from kapell.gateway.prompt_routes import PromptedChat, Responses, feedback
from kapell.gateway.prompts import PromptTable
from kapell.gateway.proxy import INTERNAL_ERROR, ProxyRoute
from kapell.gateway.tenancy import Tenant, Tenants
from kapell.gateway.tracing import RequestTracer
from kapell.gateway.upstream import AiohttpUpstream, Upstream
from kapell.gateway.vectors.routes import PATH_PREFIXES as VECTOR_PATHS
from kapell.gateway.vectors.routes import vector_routes
from kapell.gateway.vectors.service import VectorStores
from kapell.observe.access_log import AccessRecord
from kapell.observe.drift_metrics import DriftCollector
from kapell.observe.gateway_metrics import GatewayMetrics
from kapell.observe.prompt_metrics import PromptMetrics

PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
logger = logging.getLogger(__name__)


class Gateway:
    """One gateway: its app, metering, metrics, drift windows, traces and per-model state.

    ``gateway.app`` is the ASGI app; ``gateway.meter`` is what an autoscaler loop reads;
    ``set_replicas_desired`` lets that loop publish its decision on ``/metrics``.
    ``access_log``, if given, is called once per finished request to a model (the caller
    writes it somewhere: ``observe.access_log.AccessLog`` appends a file per model).
    """

    def __init__(
        self,
        source: EndpointSource,
        config: GatewayConfig | None = None,
        access_log: Callable[[AccessRecord], None] | None = None,
        upstream: Upstream | None = None,
        vectors_dir: Path | None = None,
    ) -> None:
        """``upstream``: how replicas are reached (default: one aiohttp session);
        ``vectors_dir``: where vector stores keep their data (None: no vector store API)."""
        self.source = source
        self.config = config or GatewayConfig()
        self.access_log = access_log
        self.meter = Meter()
        self.tenants = Tenants(self.config.tenants)
        self.over_budget: Callable[[Model], str | None] = lambda model: None
        """Why new requests to a model are refused by its namespace's budget (None: admit);
        set by the composition root that accounts spend."""
        self._gates: dict[str, ModelGate] = {}
        self.balancer = Balancer(
            affinity_blocks=self.config.prefix_affinity_blocks,
            cooldown_s=self.config.failed_endpoint_cooldown_s,
        )
        self._desired: dict[str, int] = {}
        self.metrics = GatewayMetrics(self._gauges)
        self.drift = DriftMonitor(self.config.drift)
        self.metrics.registry.register(DriftCollector(self.drift.report))
        self.tracer = (
            RequestTracer(self.config.otlp_endpoint, self.config.trace_content)
            if self.config.otlp_endpoint
            else None
        )
        self.upstream = upstream or AiohttpUpstream(self.config)
        self.prompts = PromptTable(PromptMetrics(self.metrics.registry))
        """Prompt versions and their weights (``update``d by the composition root)."""
        chat = ProxyRoute(self, "/v1/chat/completions")
        proxies: dict[str, ASGIApp] = {path: ProxyRoute(self, path) for path in PROXIED_PATHS}
        proxies["/v1/chat/completions"] = PromptedChat(self, chat)
        proxies["/v1/responses"] = Responses(self, chat)
        routes = [Route(path, proxy, methods=["POST"]) for path, proxy in proxies.items()]
        routes += [
            Route("/v1/prompts/{name}/feedback", feedback, methods=["POST"]),
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/healthz", self._health, methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
        ]
        self.vectors: VectorStores | None = None
        if vectors_dir is not None:
            self.vectors = VectorStores(vectors_dir, self.embed)
            routes += vector_routes(self.vectors, self.tenants.authenticate)
        self.app = _GatewayApp(
            proxies,
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )
        self.app.state.gateway = self

    # --- lifecycle ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def start(self) -> None:
        """Open the upstream client (done by the app's lifespan)."""
        await self.upstream.start()

    async def close(self) -> None:
        """Close the upstream client and stop activation tasks."""
        for gate in self._gates.values():
            await gate.close()
        await self.upstream.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)  # sends the spans still queued
        if self.vectors is not None:
            self.vectors.close()

    # --- state the control loop reads or writes ----------------------------------------------

    def set_replicas_desired(self, model: str, replicas: int) -> None:
        """Publish the autoscaler's decision for ``model`` on ``/metrics``."""
        self._desired[model] = replicas

    def _gauges(self) -> Iterator[tuple[str, int, int, int, int]]:
        for name in self.source.model_names():
            usage = self.meter.snapshot(name)
            ready = len(self.source.ready_endpoints(name))
            yield name, usage.queue_depth, usage.in_flight, ready, self._desired.get(name, 0)

    def gate(self, model: str) -> ModelGate:
        """The admission gate of ``model`` (created on first use)."""
        gate = self._gates.get(model)
        if gate is None:
            config = self.config
            gate = self._gates[model] = ModelGate(
                model,
                self.source,
                self.meter.usage(model),
                queue_max=config.queue_max_per_model,
                per_replica=config.max_in_flight_per_replica,
                timeout_s=config.activation_timeout_s,
            )
        return gate

    # --- small routes ------------------------------------------------------------------------

    async def _list_models(self, request: Request) -> Response:
        try:
            tenant = self.tenants.authenticate(request.headers.get("authorization"))
        except GatewayError as error:
            return Response(error.body(), error.status, error.headers, "application/json")
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "kapell"}
            for name in self.source.model_names()
            if tenant.may_use(name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def embed(
        self, model: str, texts: Sequence[str], authorization: str | None
    ) -> list[list[float]]:
        """``texts`` embedded by ``model`` through this gateway's own ``/v1/embeddings``."""
        answer = await post_json(
            self.app, "/v1/embeddings", {"model": model, "input": list(texts)}, authorization
        )
        rows = sorted(answer["data"], key=lambda row: row["index"])
        return [row["embedding"] for row in rows]

    # --- the proxied request -----------------------------------------------------------------

    def resolve_model(self, tenant: Tenant, name: str) -> Model:
        """The Model ``tenant`` asked for; 403 if not theirs (same answer whether or not it
        exists), 404 if it is theirs to use but not deployed."""
        if not tenant.may_use(name):
            raise GatewayError(
                403,
                f"this API key may not use model '{name}'",
                type="permission_error",
                code="model_not_allowed",
            )
        model = self.source.model(name)
        if model is None:
            raise GatewayError(404, f"model '{name}' does not exist", code="model_not_found")
        return model

    def check_budget(self, model: Model) -> None:
        """A 429 when the model's namespace is over its budget (requests in flight go on)."""
        refusal = self.over_budget(model)
        if refusal is not None:
            raise GatewayError(429, refusal, type="insufficient_quota", code="budget_exceeded")


class _GatewayApp(Starlette):
    """Starlette, except that a POST to a proxied path goes straight to its route.

    Routing by exact path in a dict, without Starlette's route matching and middleware
    stack, is most of what the hot path can save in the ASGI layer; every other request
    (and every error page) still goes through Starlette.
    """

    def __init__(self, proxies: dict[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                proxy = self._proxies.get(scope["path"])
                if proxy is not None:
                    await proxy(scope, receive, send)
                    return
            if _has_body(scope) and not scope["path"].startswith(VECTOR_PATHS):
                send = _closing(send)
        await super().__call__(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    """Whether the request announced a body (outside the proxy only the vector store API and
    prompt feedback read one)."""
    for key, value in scope["headers"]:
        if (key == b"content-length" and value != b"0") or key == b"transfer-encoding":
            return True
    return False


def _closing(send: Send) -> Send:
    """``send`` with ``connection: close`` on the response: a route that answers without
    reading the body must not leave the rest of an upload (however slow) on the connection."""

    async def send_and_close(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    return send_and_close


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    error = GatewayError(exc.status_code, exc.detail, code=code)
    return Response(error.body(), exc.status_code, exc.headers, "application/json")


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("gateway error on %s", request.url.path, exc_info=exc)
    return Response(INTERNAL_ERROR.body(), 500, media_type="application/json")


def create_app(
    source: EndpointSource,
    config: GatewayConfig | None = None,
    access_log: Callable[[AccessRecord], None] | None = None,
    vectors_dir: Path | None = None,
) -> Starlette:
    """The gateway's ASGI app; ``app.state.gateway`` is its ``Gateway`` (meter, metrics)."""
    return Gateway(source, config, access_log, vectors_dir=vectors_dir).app
