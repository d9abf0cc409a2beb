"""The gateway: an OpenAI-compatible ASGI app in front of every model's replicas.

A request goes: read the body (bounded) → authenticate the tenant → parse the few fields the
gateway needs → check the tenant may use the model and has quota → the model's gate admits it
(or queues it while replicas start: ``activator``) → ``policy.routing`` picks a replica, whose
outstanding counts rise before anything is awaited → one shared aiohttp session forwards it,
streaming server-sent events chunk by chunk → counts, metering and metrics are updated.

The proxy routes are plain ASGI callables (no Starlette ``Request``/``Response`` objects) to
keep the added latency small; Starlette provides routing, lifespan and error pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from kapell.api import Model
from kapell.api.replica import Endpoint
from kapell.gateway.activator import ModelGate
from kapell.gateway.config import GatewayConfig
from kapell.gateway.endpoints import EndpointSource
from kapell.gateway.errors import GatewayError, send_error
from kapell.gateway.metering import Meter, busy_power_w
from kapell.gateway.openapi import openapi_document
from kapell.gateway.requests import ParsedRequest, parse_request
from kapell.gateway.tenancy import Tenant, Tenants
from kapell.observe.access_log import AccessRecord
from kapell.observe.gateway_metrics import GatewayMetrics, RequestMetrics
from kapell.policy import routing

PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
INTERNAL_ERROR = GatewayError(
    500,
    "internal gateway error (logged by the gateway)",
    type="server_error",
    code="internal_error",
)
_JSON_HEADERS = {"content-type": "application/json"}
logger = logging.getLogger(__name__)
_UPSTREAM_FAILURES = (aiohttp.ClientError, TimeoutError, ConnectionError)


@dataclass
class _ReplicaCounts:
    """What this gateway has outstanding at one replica (mutated at dispatch and finish)."""

    tokens: int = 0
    requests: int = 0
    cooldown_until_s: float = 0.0


class _ClientGone(Exception):
    """The client disconnected; the upstream request was cancelled."""


class Gateway:
    """One gateway: its app, metering, metrics and per-model state.

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
    ) -> None:
        self.source = source
        self.config = config or GatewayConfig()
        self.access_log = access_log
        self.meter = Meter()
        self.tenants = Tenants(self.config.tenants)
        self._gates: dict[str, ModelGate] = {}
        self._counts: dict[str, dict[str, _ReplicaCounts]] = {}
        self._round_robin: dict[str, int] = {}
        self._desired: dict[str, int] = {}
        self.over_budget: Callable[[Model], str | None] = lambda model: None
        """Why new requests to a model are refused by its namespace's budget (None: admit);
        set by the composition root that accounts spend."""
        self._cooling_until_s = 0.0
        """Latest end of any replica's failure cooldown; 0 when none is cooling."""
        self.metrics = GatewayMetrics(self._gauges)
        self._session: aiohttp.ClientSession | None = None
        proxies = {path: _ProxyRoute(self, path) for path in PROXIED_PATHS}
        routes = [Route(path, proxy, methods=["POST"]) for path, proxy in proxies.items()]
        routes += [
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/healthz", self._health, methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
        ]
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
        """Open the shared upstream session (done by the app's lifespan)."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.config.upstream_connect_timeout_s,
                sock_read=self.config.upstream_read_timeout_s,
            )
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False
            )

    async def close(self) -> None:
        """Close the upstream session and stop activation tasks."""
        for gate in self._gates.values():
            await gate.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

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

    def choose(
        self, model: Model, request: ParsedRequest, request_tokens: int, exclude: set[str]
    ) -> Endpoint | None:
        """The replica for ``request`` by the model's routing strategy (None if none left)."""
        name = model.metadata.name
        counts = self._counts.setdefault(name, {})
        candidates = self.source.ready_endpoints(name)
        if exclude:
            candidates = [e for e in candidates if e.replica_id not in exclude]
        if self._cooling_until_s > 0.0:
            candidates = self._not_cooling(candidates, counts)
        if not candidates:
            return None
        strategy = model.spec.routing.strategy
        if strategy == "round-robin":
            turn = self._round_robin.get(name, 0)
            self._round_robin[name] = turn + 1
            return candidates[routing.round_robin(len(candidates), turn)]
        loads = [_load(e, counts) for e in candidates]
        if strategy == "prefix-affinity":
            blocks = routing.text_block_hashes(request.prompt_text, self.config.prefix_block_chars)
            index = routing.prefix_affinity(
                loads,
                blocks,
                request_tokens=request_tokens,
                load_bound=model.spec.routing.prefix_load_bound,
                affinity_blocks=self.config.prefix_affinity_blocks,
            )
        else:
            index = routing.least_tokens(loads)
        return candidates[index]

    def _not_cooling(
        self, candidates: Sequence[Endpoint], counts: dict[str, _ReplicaCounts]
    ) -> Sequence[Endpoint]:
        """``candidates`` without replicas in their failure cooldown (all if none is left)."""
        now_s = time.monotonic()
        if now_s >= self._cooling_until_s:
            self._cooling_until_s = 0.0
            return candidates
        idle = _ReplicaCounts()
        cooled = [e for e in candidates if counts.get(e.replica_id, idle).cooldown_until_s <= now_s]
        return cooled or candidates

    def cool_down(self, counts: _ReplicaCounts) -> None:
        """Skip a replica that just failed for ``failed_endpoint_cooldown_s``."""
        counts.cooldown_until_s = time.monotonic() + self.config.failed_endpoint_cooldown_s
        self._cooling_until_s = max(self._cooling_until_s, counts.cooldown_until_s)

    def counts(self, endpoint: Endpoint) -> _ReplicaCounts:
        """The outstanding counts of ``endpoint`` (created on first use)."""
        per_model = self._counts.setdefault(endpoint.model, {})
        found = per_model.get(endpoint.replica_id)
        if found is None:
            found = per_model[endpoint.replica_id] = _ReplicaCounts()
        return found

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("gateway not started: run the app with its lifespan")
        return self._session


class _GatewayApp(Starlette):
    """Starlette, except that a POST to a proxied path goes straight to its route.

    Routing by exact path in a dict, without Starlette's route matching and middleware
    stack, is most of what the hot path can save in the ASGI layer; every other request
    (and every error page) still goes through Starlette.
    """

    def __init__(self, proxies: dict[str, _ProxyRoute], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                proxy = self._proxies.get(scope["path"])
                if proxy is not None:
                    await proxy(scope, receive, send)
                    return
            if _has_body(scope):
                send = _closing(send)
        await super().__call__(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    """Whether the request announced a body (no route outside the proxy reads one)."""
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


def _load(endpoint: Endpoint, counts: dict[str, _ReplicaCounts]) -> routing.ReplicaLoad:
    found = counts.get(endpoint.replica_id)
    if found is None:
        return routing.ReplicaLoad(endpoint.replica_id)
    return routing.ReplicaLoad(endpoint.replica_id, found.tokens, found.requests)


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    error = GatewayError(exc.status_code, exc.detail, code=code)
    return Response(error.body(), exc.status_code, exc.headers, "application/json")


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("gateway error on %s", request.url.path, exc_info=exc)
    return Response(INTERNAL_ERROR.body(), 500, media_type="application/json")


async def _read_body(receive: Receive, scope: Scope, max_bytes: int, timeout_s: float) -> bytes:
    """The whole request body, or a 413 (too large) or a 408 (not all there within
    ``timeout_s``); both close the connection, since the rest of the upload is unread."""
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit() and int(value) > max_bytes:
            raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise GatewayError(
            408,
            f"the request body did not arrive within {timeout_s:g}s",
            code="request_timeout",
            headers={"connection": "close"},
        ) from None


def _too_large(max_bytes: int) -> GatewayError:
    return GatewayError(
        413,
        f"request body exceeds the {max_bytes}-byte limit",
        code="request_too_large",
        headers={"connection": "close"},
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


_DECODER = json.JSONDecoder()
_DONE_EVENT = b"data: [DONE]\n\n"


def _usage_from(body: bytes) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` from a JSON body's ``usage``, if present.

    Only the object after the last ``"usage":`` key is decoded: engines put usage last, and
    decoding a long completion just to read two integers is the gateway's largest avoidable
    per-response cost.
    """
    key = body.rfind(b'"usage":')
    if key < 0:
        return None
    try:
        text = body[key + 8 :].decode()
        usage, _ = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(usage, dict):
        return None
    prompt, generated = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(generated, int):
        return None
    return prompt, generated


class _ProxyRoute:
    """ASGI app that forwards one OpenAI endpoint to the chosen replica."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self._gateway = gateway
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self._gateway
        started_s = time.perf_counter()
        arrived = time.time()
        model: Model | None = None
        try:
            config = gateway.config
            body = await _read_body(receive, scope, config.max_body_bytes, config.body_timeout_s)
            tenant = gateway.tenants.authenticate(_header(scope, b"authorization"))
            request = parse_request(self._path, body)
            model = gateway.resolve_model(tenant, request.model)
            gateway.check_budget(model)
            tenant.admit()
        except GatewayError as error:
            await send_error(send, error)
            if model is not None and gateway.access_log is not None:  # over the tenant's quota
                gateway.access_log(AccessRecord(
                    arrived, model.metadata.name, self._path, error.status,
                    time.perf_counter() - started_s, None, 0, 0, None, tenant.name, request.stream,
                ))  # fmt: skip
            return
        except _ClientGone:
            return
        except Exception:  # this route bypasses Starlette's error middleware: same answer
            logger.exception("gateway error admitting a request to %s", self._path)
            await send_error(send, INTERNAL_ERROR)
            return
        name = model.metadata.name
        metrics = gateway.metrics.for_request(name, tenant.name)
        served = model.spec.source.served_name
        if served and served != name:
            request.payload["model"] = served
            body = json.dumps(request.payload).encode()
        exchange = _Exchange(gateway, self._path, model, request, body, tenant, metrics, send)
        status = await exchange.run(receive, started_s)
        metrics.count(status)
        if gateway.access_log is not None:
            gateway.access_log(AccessRecord(
                arrived, name, self._path, status, time.perf_counter() - started_s,
                exchange.ttft_s, exchange.prompt_tokens, exchange.generated_tokens,
                exchange.replica, tenant.name, request.stream,
            ))  # fmt: skip


class _Exchange:
    """One admitted request's trip upstream and back, with retries and accounting."""

    def __init__(
        self,
        gateway: Gateway,
        path: str,
        model: Model,
        request: ParsedRequest,
        body: bytes,
        tenant: Tenant,
        metrics: RequestMetrics,
        send: Send,
    ) -> None:
        self.gateway = gateway
        self.path = path
        self.model = model
        self.request = request
        self.body = body
        self.tenant = tenant
        self.metrics = metrics
        self.send = send
        self.responding = False
        self.finished = False
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.ttft_s: float | None = None
        self.replica: str | None = None
        """The replica last tried (the one that answered, if any did)."""
        self.power_w = busy_power_w(model)
        self.energy_j = 0.0
        """Modelled joules charged to this request on the replicas it was sent to."""
        self.request_tokens = request.prompt_tokens_estimate + (
            request.max_tokens
            if request.max_tokens is not None
            else gateway.config.default_max_tokens
        )

    async def run(self, receive: Receive, started_s: float) -> int:
        """Admit, forward and account; returns the status the client got (499: it left)."""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch_disconnect(receive, task))
        gate = self.gateway.gate(self.model.metadata.name)
        self.gateway.meter.usage(self.model.metadata.name).arrive(
            self.request.prompt_tokens_estimate,
            self.request_tokens - self.request.prompt_tokens_estimate,
        )
        status = 499
        try:
            await gate.acquire()
            try:
                status = await self._forward(started_s)
            finally:
                gate.release()
        except GatewayError as error:
            if not self.responding:
                await send_error(self.send, error)
            status = error.status
        except Exception:
            logger.exception("gateway error proxying %s", self.path)
            if not self.responding:
                await send_error(self.send, INTERNAL_ERROR)
            status = 500
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled() or task.cancelling() > 1:
                raise
            task.uncancel()
        finally:
            self.finished = True
            watcher.cancel()
            self._account(started_s)
        return status

    async def _watch_disconnect(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            task.cancel()

    def _account(self, started_s: float) -> None:
        usage = self.gateway.meter.usage(self.model.metadata.name)
        usage.requests += 1
        usage.prompt_tokens += self.prompt_tokens
        usage.generated_tokens += self.generated_tokens
        if self.replica is not None and self.power_w is not None:
            usage.request_energy_j += self.energy_j
            self.metrics.energy_j.observe(self.energy_j)
        tokens = self.prompt_tokens + self.generated_tokens
        if tokens:
            self.gateway.meter.charge_tenant(
                self.model.metadata.name,
                self.tenant.name,
                self.prompt_tokens,
                self.generated_tokens,
            )
            self.tenant.tokens.take(tokens)
            self.metrics.prompt_tokens.inc(self.prompt_tokens)
            self.metrics.generated_tokens.inc(self.generated_tokens)
        self.metrics.e2e_s.observe(time.perf_counter() - started_s)

    async def _forward(self, started_s: float) -> int:
        gateway = self.gateway
        tried: set[str] = set()
        failure = "no ready replica"
        for _ in range(gateway.config.retries + 1):
            endpoint = gateway.choose(self.model, self.request, self.request_tokens, tried)
            if endpoint is None:
                break
            if tried:
                self.metrics.retries.inc()
            counts = gateway.counts(endpoint)
            self.replica = endpoint.replica_id
            counts.tokens += self.request_tokens
            counts.requests += 1
            self._energy_start(endpoint.replica_id)
            try:
                return await self._exchange(endpoint, started_s)
            except _UPSTREAM_FAILURES as exc:
                if self.responding:
                    raise
                failure = f"replica {endpoint.replica_id} failed: {type(exc).__name__}"
                tried.add(endpoint.replica_id)
                gateway.cool_down(counts)
            finally:
                counts.tokens -= self.request_tokens
                counts.requests -= 1
                self._energy_finish(endpoint.replica_id)
        raise GatewayError(
            502,
            f"model '{self.model.metadata.name}': {failure}; tried {len(tried)} replica(s)",
            type="upstream_error",
            code="upstream_failed",
        )

    def _energy_start(self, replica_id: str) -> None:
        if self.power_w is not None:
            energy = self.gateway.meter.replica_energy(replica_id, self.power_w)
            energy.start(id(self), self.request_tokens, time.monotonic())

    def _energy_finish(self, replica_id: str) -> None:
        if self.power_w is not None:
            energy = self.gateway.meter.replica_energy(replica_id, self.power_w)
            self.energy_j += energy.finish(id(self), time.monotonic())
            self.gateway.meter.release_energy(replica_id)

    async def _exchange(self, endpoint: Endpoint, started_s: float) -> int:
        session = self.gateway.session
        async with session.post(
            endpoint.base_url + self.path,
            data=self.body,
            headers=_JSON_HEADERS,
        ) as upstream:
            if self.request.stream and upstream.status == 200:
                return await self._relay_stream(upstream, endpoint, started_s)
            payload = await upstream.read()
            self.ttft_s = time.perf_counter() - started_s
            self.metrics.ttft_s.observe(self.ttft_s)
            if upstream.status == 200:
                usage = _usage_from(payload)
                if usage is not None:
                    self.prompt_tokens, self.generated_tokens = usage
            content_type = upstream.headers.get("content-type", "application/json")
            self.responding = True
            await self.send(
                {
                    "type": "http.response.start",
                    "status": upstream.status,
                    "headers": [
                        (b"content-type", content_type.encode()),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            self.finished = True
            await self.send({"type": "http.response.body", "body": payload})
            return upstream.status

    async def _relay_stream(
        self, upstream: aiohttp.ClientResponse, endpoint: Endpoint, started_s: float
    ) -> int:
        send = self.send
        self.responding = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        events = 0
        tail = previous = b""
        first = True
        try:
            async for chunk in upstream.content.iter_any():
                if first:
                    self.ttft_s = time.perf_counter() - started_s
                    self.metrics.ttft_s.observe(self.ttft_s)
                    first = False
                events += chunk.count(b"data:")
                previous, tail = tail, chunk
                if chunk.endswith(_DONE_EVENT):
                    # The client has the whole answer: one that hangs up now, before the
                    # replica closes the stream, is done, not gone; its tokens still count.
                    self.finished = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _UPSTREAM_FAILURES as exc:
            error = GatewayError(
                502,
                f"replica {endpoint.replica_id} failed mid-stream: {type(exc).__name__}",
                type="upstream_error",
                code="upstream_failed",
            )
            await send({"type": "http.response.body", "body": error.sse_event(), "more_body": True})
        usage = _usage_from(previous + tail)  # the usage chunk may precede [DONE]'s
        if usage is not None:
            self.prompt_tokens, self.generated_tokens = usage
        else:
            self.prompt_tokens = self.request.prompt_tokens_estimate
            self.generated_tokens = max(0, events - 2)  # minus the role chunk and [DONE]
        self.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200


def create_app(
    source: EndpointSource,
    config: GatewayConfig | None = None,
    access_log: Callable[[AccessRecord], None] | None = None,
) -> Starlette:
    """The gateway's ASGI app; ``app.state.gateway`` is its ``Gateway`` (meter, metrics)."""
    return Gateway(source, config, access_log).app
