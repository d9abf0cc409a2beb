"""The proxy exchange: one OpenAI request's trip from the client to a replica and back.

``ProxyRoute`` is the plain ASGI callable for each proxied path (no Starlette request or
response objects, to keep the added latency small): read the body (bounded) → authenticate the
tenant → parse the few fields the gateway needs → resolve the model and admit against the
tenant's quota. ``Exchange`` then waits for the model's gate (the activator), asks the
balancer for a replica (whose outstanding counts rise before anything is awaited), posts
through the gateway's ``Upstream`` (retrying another replica on a failure before any byte went
back), streams server-sent events chunk by chunk, and updates counts, metering and metrics;
the finished request then feeds the drift windows (``gateway.drift``) and, if tracing is on,
becomes a span (``gateway.tracing``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from kapell.api import Model
from kapell.api.replica import Endpoint
from kapell.gateway.drift import prompt_key
from kapell.gateway.errors import GatewayError, send_error
from kapell.gateway.metering import busy_power_w
from kapell.gateway.requests import ParsedRequest, parse_request
from kapell.gateway.tenancy import Tenant
from kapell.gateway.tracing import CONTENT_LIMIT_BYTES, FinishedRequest
from kapell.gateway.upstream import UpstreamResponse
from kapell.observe.access_log import AccessRecord
from kapell.observe.gateway_metrics import RequestMetrics
from kapell.policy import routing

if TYPE_CHECKING:
    from kapell.gateway.app import Gateway

INTERNAL_ERROR = GatewayError(
    500,
    "internal gateway error (logged by the gateway)",
    type="server_error",
    code="internal_error",
)
logger = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client disconnected; the upstream request was cancelled."""


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
                    raise ClientGone
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


class ProxyRoute:
    """ASGI app that forwards one OpenAI endpoint to the chosen replica."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self._gateway = gateway
        self._path = path

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes | None = None,
        prompt: dict[str, Any] | None = None,
    ) -> None:
        """``body``: the request body, if a route in front of this one read it already;
        ``prompt``: the prompt object that route rendered into it (drift and traces key on it)."""
        gateway = self._gateway
        started_s = time.perf_counter()
        arrived = time.time()
        model: Model | None = None
        try:
            config = gateway.config
            if body is None:
                body = await _read_body(
                    receive, scope, config.max_body_bytes, config.body_timeout_s
                )
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
        except ClientGone:
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
        latency_s = time.perf_counter() - started_s
        if gateway.access_log is not None:
            gateway.access_log(AccessRecord(
                arrived, name, self._path, status, latency_s,
                exchange.ttft_s, exchange.prompt_tokens, exchange.generated_tokens,
                exchange.replica, tenant.name, request.stream,
            ))  # fmt: skip
        self._observe(exchange, scope, status, arrived, latency_s, prompt)

    def _observe(
        self,
        exchange: _Exchange,
        scope: Scope,
        status: int,
        arrived: float,
        latency_s: float,
        prompt: dict[str, Any] | None,
    ) -> None:
        """Feed the finished request to drift detection, and trace it if tracing is on."""
        gateway, request = self._gateway, exchange.request
        name = exchange.model.metadata.name
        payload = request.payload if prompt is None else {**request.payload, "prompt": prompt}
        prompt_id, version = prompt_key(payload)
        gateway.drift.observe(
            (name, prompt_id, version),
            request.prompt_text,
            exchange.generated_tokens,
            latency_s,
            status,
            arrived,
        )
        if gateway.tracer is not None:
            start_ns = int(arrived * 1e9)
            gateway.tracer.record(FinishedRequest(
                self._path, name, exchange.tenant.name, status, request.stream, start_ns,
                start_ns + int(latency_s * 1e9), exchange.ttft_s, exchange.prompt_tokens,
                exchange.generated_tokens, exchange.replica, payload, prompt_id,
                version, exchange.body,
                None if exchange.output is None else bytes(exchange.output),
                _header(scope, b"traceparent"),
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
        tracer = gateway.tracer
        self.output = bytearray() if tracer is not None and tracer.capture_content else None
        """The response bytes a span records (up to ``CONTENT_LIMIT_BYTES``), if any."""
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
        balancer = gateway.balancer
        name = self.model.metadata.name
        for _ in range(gateway.config.retries + 1):
            candidates = gateway.source.ready_endpoints(name)
            endpoint = balancer.choose(
                self.model, candidates, self.request_tokens, self._block_hashes, tried
            )
            if endpoint is None:
                break
            if tried:
                self.metrics.retries.inc()
            counts = balancer.counts(endpoint)
            self.replica = endpoint.replica_id
            counts.tokens += self.request_tokens
            counts.requests += 1
            self._energy_start(endpoint.replica_id)
            try:
                return await self._exchange(endpoint, started_s)
            except gateway.upstream.failures as exc:
                if self.responding:
                    raise
                failure = f"replica {endpoint.replica_id} failed: {type(exc).__name__}"
                tried.add(endpoint.replica_id)
                balancer.cool_down(counts)
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

    def _block_hashes(self) -> list[bytes]:
        """The prompt's prefix blocks, for prefix-affinity routing."""
        return routing.text_block_hashes(
            self.request.prompt_text, self.gateway.config.prefix_block_chars
        )

    async def _exchange(self, endpoint: Endpoint, started_s: float) -> int:
        async with self.gateway.upstream.post(endpoint.base_url + self.path, self.body) as upstream:
            if self.request.stream and upstream.status == 200:
                return await self._relay_stream(upstream, endpoint, started_s)
            payload = await upstream.read()
            self.ttft_s = time.perf_counter() - started_s
            self.metrics.ttft_s.observe(self.ttft_s)
            if self.output is not None:
                self.output += payload[:CONTENT_LIMIT_BYTES]
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
        self, upstream: UpstreamResponse, endpoint: Endpoint, started_s: float
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
                if self.output is not None and len(self.output) < CONTENT_LIMIT_BYTES:
                    self.output += chunk
                previous, tail = tail, chunk
                if chunk.endswith(_DONE_EVENT):
                    # The client has the whole answer: one that hangs up now, before the
                    # replica closes the stream, is done, not gone; its tokens still count.
                    self.finished = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except self.gateway.upstream.failures as exc:
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
