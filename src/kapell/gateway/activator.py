"""Admission per model: hold requests while no replica (or no free slot) can take them.

A model with no ready replica, or whose replicas all carry ``max_in_flight_per_replica``
requests, queues new requests in a bounded FIFO. The first queued request of a model with no
replica asks the endpoint source for capacity (scale from zero); a single waiter task per
model then awaits ``EndpointSource.wait_ready`` and releases the queue in arrival order the
moment a replica is ready. A request is only ever admitted once, so nothing is lost or sent
twice: it either gets a slot, or a 429 (queue full) or 503 (waited too long) before any byte
went upstream.

A model with no ready replica that the source says cannot start (``EndpointSource.unavailable``)
fails fast: new requests get a 503 carrying the reason at once, and held ones are released
with it, rather than waiting out ``activation_timeout_s`` for a replica that will not come.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from kapell.gateway.endpoints import EndpointSource
from kapell.gateway.errors import GatewayError
from kapell.gateway.metering import ModelUsage


class ModelGate:
    """The admission state of one model. Use ``async with gate.slot(...)``-style via
    ``acquire``/``release``; every successful ``acquire`` must be paired with ``release``."""

    def __init__(
        self,
        name: str,
        source: EndpointSource,
        usage: ModelUsage,
        *,
        queue_max: int,
        per_replica: int,
        timeout_s: float,
    ) -> None:
        self._name = name
        self._source = source
        self._usage = usage
        self._queue_max = queue_max
        self._per_replica = per_replica
        self._timeout_s = timeout_s
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._activation: asyncio.Task[None] | None = None

    def _capacity(self) -> int:
        return self._per_replica * len(self._source.ready_endpoints(self._name))

    async def acquire(self) -> None:
        """Return once this request may go upstream, or raise a 429/503 ``GatewayError``."""
        usage = self._usage
        if not self._waiters and usage.in_flight < self._capacity():
            usage.admit(time.monotonic())
            return
        if not self._source.ready_endpoints(self._name):
            reason = self._source.unavailable(self._name)
            if reason is not None:
                self._source.request_capacity(self._name)  # the platform looks again
                usage.rejected += 1
                raise self._cannot_start(reason)
        if len(self._waiters) >= self._queue_max:
            usage.rejected += 1
            raise GatewayError(
                429,
                f"model '{self._name}' has {len(self._waiters)} requests queued (the limit); "
                "retry later",
                type="rate_limit_exceeded",
                code="queue_full",
                headers={"retry-after": "1"},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        usage.queue_depth += 1
        if not self._source.ready_endpoints(self._name):
            self._source.request_capacity(self._name)
            if self._activation is None or self._activation.done():
                self._activation = asyncio.create_task(self._await_replica())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout_s)
        except TimeoutError:
            if waiter.done():  # granted in the same tick the timeout fired: keep the slot
                return
            waiter.cancel()
            self._remove(waiter)
            usage.rejected += 1
            raise GatewayError(
                503,
                f"model '{self._name}' had no free ready replica within "
                f"{self._timeout_s:g}s; it may still be starting, retry later",
                type="service_unavailable",
                code="no_ready_replica",
                headers={"retry-after": str(max(1, math.ceil(self._timeout_s / 10)))},
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # the slot was granted to a client that left
            else:
                waiter.cancel()
                self._remove(waiter)
            raise

    def _cannot_start(self, reason: str) -> GatewayError:
        """The 503 for a model whose replicas cannot start. No ``Retry-After``: nothing will
        change until its spec or the machine does, so clients are told not to retry
        (``x-should-retry: false``, which OpenAI's own SDKs obey)."""
        return GatewayError(
            503,
            f"model '{self._name}' cannot start: {reason}",
            type="service_unavailable",
            code="model_cannot_start",
            headers={"x-should-retry": "false"},
        )

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
            self._usage.queue_depth -= 1
        except ValueError:
            pass

    def release(self) -> None:
        """Give back a slot taken by ``acquire`` and admit waiters that now fit."""
        self._usage.finish(time.monotonic())
        self._pump()

    def _pump(self) -> None:
        usage = self._usage
        capacity = self._capacity()
        while self._waiters and usage.in_flight < capacity:
            waiter = self._waiters.popleft()
            usage.queue_depth -= 1
            if not waiter.done():
                waiter.set_result(None)
                usage.admit(time.monotonic())

    async def _await_replica(self) -> None:
        while self._waiters and not self._source.ready_endpoints(self._name):
            reason = self._source.unavailable(self._name)
            if reason is not None:
                self._fail_waiters(self._cannot_start(reason))
                return
            await self._source.wait_ready(self._name, self._timeout_s)
        self._pump()

    def _fail_waiters(self, error: GatewayError) -> None:
        """Release every held request with ``error`` (in arrival order)."""
        usage = self._usage
        while self._waiters:
            waiter = self._waiters.popleft()
            usage.queue_depth -= 1
            if not waiter.done():
                waiter.set_exception(error)
                usage.rejected += 1

    async def close(self) -> None:
        """Stop the activation task (at gateway shutdown)."""
        if self._activation is not None:
            self._activation.cancel()
            await asyncio.gather(self._activation, return_exceptions=True)
