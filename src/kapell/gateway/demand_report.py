"""Pushes one gateway replica's demand to the operator (see ``api.demand``).

Every ``interval_s`` the replica posts its counters and gauges for every Model it serves; a
request held for a Model with no ready replica posts at once (``wake``), so the operator starts
a replica without waiting for its next resync. A failed post is logged once per outage and
retried on the next tick: the counters are cumulative, so nothing metered is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import aiohttp

from kapell.api.demand import DEMAND_PATH, DemandReport
from kapell.gateway.demand import reported_demand
from kapell.gateway.metering import Meter

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
POST_TIMEOUT_S = 5.0


class DemandReporter:
    """Runs as a task on the gateway's event loop; ``wake`` is called from the activator.
    ``operator_url`` says where the operator is now (None: not known yet)."""

    def __init__(
        self,
        operator_url: Callable[[], str | None],
        gateway_id: str,
        meter: Meter,
        models: Callable[[], Sequence[str]],
        namespace: str,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._operator_url = operator_url
        self._gateway_id = gateway_id
        self._meter = meter
        self._models = models
        self._namespace = namespace
        self._interval_s = interval_s
        self._woken: set[str] = set()
        self._nudge = asyncio.Event()
        self._failing = False
        self.reports = 0
        """Reports the operator accepted."""

    def wake(self, name: str) -> None:
        """``name`` has a request waiting for capacity: report now."""
        self._woken.add(name)
        self._nudge.set()

    def report(self) -> DemandReport:
        models = {}
        for name in self._models():
            usage = self._meter.snapshot(name)
            models[f"{self._namespace}/{name}"] = reported_demand(usage)
        woken = sorted(f"{self._namespace}/{name}" for name in self._woken)
        self._woken.clear()
        return DemandReport(gateway=self._gateway_id, models=models, wake=woken)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), self._interval_s)
                self._nudge.clear()
                await self._post(session, self.report())

    async def _post(self, session: aiohttp.ClientSession, report: DemandReport) -> None:
        base = self._operator_url()
        try:
            if base is None:
                raise aiohttp.ClientError("no operator is ready")
            url = base.rstrip("/") + DEMAND_PATH
            body = report.model_dump_json()
            async with session.post(
                url, data=body, headers={"content-type": "application/json"}
            ) as response:
                response.raise_for_status()
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not self._failing:
                log.warning("cannot report demand to the operator (%s): %s", base, exc)
            self._failing = True
            for key in report.wake:  # tell it again next time
                self._woken.add(key.split("/", 1)[1])
            return
        if self._failing:
            log.info("reporting demand to the operator at %s again", base)
        self._failing = False
        self.reports += 1
