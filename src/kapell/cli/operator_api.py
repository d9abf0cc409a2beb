"""The operator's HTTP endpoint: probes, Prometheus metrics, the gateways' demand reports, and
the web console (``/console/``, read-only) when one is given.

Served by every operator candidate, so a Deployment can probe standbys too; ``/readyz`` answers
200 only while this candidate leads, so a Service in front of the candidates reaches the
leader alone, and a report that still lands on a standby gets a 503 (the gateway retries it
with its next report).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from kapell.api.demand import DEMAND_PATH, DemandReport
from kapell.console.app import CONSOLE_PATH
from kapell.control.demand import DemandBoard


def operator_app(
    board: DemandBoard,
    leading: threading.Event,
    registry: CollectorRegistry,
    wake: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    console: ASGIApp | None = None,
) -> Starlette:
    """``wake`` gets each ``namespace/name`` a report says has requests waiting; ``console``
    (``console.app.console_app``) is mounted at ``/console``."""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        if leading.is_set():
            return PlainTextResponse("leading")
        return PlainTextResponse("standby: another candidate holds the Lease", 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def demand(request: Request) -> Response:
        try:
            report = DemandReport.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return JSONResponse({"error": f"not a demand report: {problems}"}, 400)
        if not leading.is_set():
            return JSONResponse({"error": "this operator is a standby; report to the leader"}, 503)
        board.record(report, clock())
        for model in report.wake:
            wake(model)
        return Response(status_code=204)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(DEMAND_PATH, demand, methods=["POST"]),
    ]
    if console is not None:
        routes.append(Mount(CONSOLE_PATH, console))
    return Starlette(routes=routes)
