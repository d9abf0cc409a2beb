"""Requests queued inside each model's engines, scraped from the replicas' ``/metrics``.

The autoscaler's capacity learner needs to know when replicas are saturated: requests waiting
inside an engine (vLLM's ``vllm:num_requests_waiting``; each engine adapter names its own
gauge). The gateway cannot see them, so this poller reads them from every ready replica once a
``period_s`` and keeps the sum per model for ``kapell up``'s demand sample.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import aiohttp

from kapell.api.model import Model
from kapell.api.replica import Replica
from kapell.engines.adapters import adapter_for

PERIOD_S = 1.0
_TIMEOUT = aiohttp.ClientTimeout(total=1.0)


def gauge_sum(exposition: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text exposition (0 if absent)."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


class EngineWaiting:
    """``of(model_key)``: requests waiting inside the model's ready replicas, as last scraped."""

    def __init__(
        self,
        models: Callable[[], Iterable[Model]],
        replicas: Callable[[str], list[Replica]],
        period_s: float = PERIOD_S,
    ) -> None:
        self._models = models
        self._replicas = replicas
        self._period_s = period_s
        self._waiting: dict[str, int] = {}

    def of(self, model_key: str) -> int:
        return self._waiting.get(model_key, 0)

    async def run(self) -> None:
        """Scrape until cancelled; a replica that does not answer counts 0 this round."""
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            while True:
                for model in list(self._models()):
                    self._waiting[model.key] = await self._scrape(session, model)
                await asyncio.sleep(self._period_s)

    async def _scrape(self, session: aiohttp.ClientSession, model: Model) -> int:
        name = adapter_for(model).metric_names.get("ENGINE_REQUESTS_WAITING")
        ready = [r for r in self._replicas(model.key) if r.ready and r.url]
        if name is None or not ready:
            return 0

        async def one(replica: Replica) -> float:
            try:
                async with session.get(replica.url + "/metrics") as response:
                    return gauge_sum(await response.text(), name) if response.status == 200 else 0
            except (aiohttp.ClientError, TimeoutError):
                return 0.0

        return round(sum(await asyncio.gather(*(one(r) for r in ready))))
