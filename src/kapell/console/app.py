"""The console's ASGI app: five pages over a ``ConsoleSource``, and the series the plots read.

Pages are rendered whole on the server. A page's changing parts carry ``hx-get`` with
``hx-trigger="every 2s"``; htmx asks for the same URL with an ``HX-Request`` header and the app
answers with that part alone, so there is one template per part and no client-side model. The
plots are uPlot charts that ``static/console.js`` builds and refreshes from ``/series/...``.
The app changes nothing: every route is a GET.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from kapell.api import Model, Resource, TrainingJob
from kapell.console.series import Sample
from kapell.console.source import ConsoleSource

HERE = Path(__file__).parent
CONSOLE_PATH = "/console"
"""Where ``kapell up`` and the operator mount the console on their HTTP endpoints."""
REFRESH_S = 2
EVENTS_SHOWN = 12
LIMIT_UNITS = {"tokens": "tokens", "gpuSeconds": "GPU-s", "joules": "J", "gramsCo2": "gCO2"}
SERIES_FIELDS = (
    "tokens_per_s", "latency_p50_ms", "latency_p95_ms", "queue_depth", "in_flight", "ready",
    "desired",
)  # fmt: skip


def series_columns(samples: list[Sample]) -> dict[str, list[Any]]:
    """Samples as columns (uPlot's data layout): ``t`` in epoch seconds, then each field."""
    columns: dict[str, list[Any]] = {"t": [s.t_s for s in samples]}
    for name in SERIES_FIELDS:
        columns[name] = [getattr(s, name) for s in samples]
    return columns


def budget_rows(budget: dict[str, Any]) -> list[dict[str, Any]]:
    """Each capped quantity of a Budget: its limit, what is used and the share used."""
    rows = []
    for name, limit in budget["limits"].items():
        left = budget["remaining"].get(name, limit)
        used = limit - left
        rows.append({
            "name": name, "unit": LIMIT_UNITS.get(name, name), "limit": limit, "used": used,
            "share": used / limit if limit else 1.0,
        })  # fmt: skip
    return rows


def gpu_request(model: Model) -> str:
    """What one replica of ``model`` asks of a GPU, in words: ``none``, ``2 x H100-80GB``,
    ``MIG 3g.40gb``, ``250/1000 (time-slicing)``."""
    gpu = model.spec.resources.gpu
    if gpu is None:
        return "none"
    kinds = f" {'/'.join(gpu.models)}" if gpu.models else ""
    if gpu.mig_profile is not None:
        return f"MIG {gpu.mig_profile}{kinds}"
    if gpu.milli is not None:
        return f"{gpu.milli}/1000 ({gpu.sharing}){kinds}"
    return f"{gpu.count} x{kinds or ' any'}"


def console_app(source: ConsoleSource) -> Starlette:
    """The console over ``source``; mount it anywhere (its links follow the mount path)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(refresh_s=REFRESH_S, mode=source.mode)
    templates.env.filters["gpu_request"] = gpu_request

    def render(request: Request, page: str, part: str, **context: Any) -> Response:
        """The whole page, or only its live part when htmx asks for it."""
        name = part if request.headers.get("HX-Request") == "true" else page
        base = request.scope.get("root_path", "").rstrip("/")
        return templates.TemplateResponse(request, name, {"base": base, **context})

    def models() -> list[Model]:
        found = [m for m in source.resources("Model") if isinstance(m, Model)]
        return sorted(found, key=lambda m: (m.metadata.namespace, m.metadata.name))

    def model_rows() -> list[dict[str, Any]]:
        rows = []
        for model in models():
            samples = source.series(model)
            replicas = source.replicas(model)
            rows.append({
                "model": model,
                "ready": sum(r.phase == "Ready" for r in replicas),
                "replica_rows": replicas,
                "events": source.events(model, EVENTS_SHOWN),
                "last": samples[-1] if samples else None,
            })  # fmt: skip
        return rows

    async def models_page(request: Request) -> Response:
        return render(request, "models.html", "models_table.html", rows=model_rows())

    async def model_part(request: Request) -> Response:
        model = _find(source.resources("Model"), request)
        if not isinstance(model, Model):
            return Response("no such model", 404)
        return templates.TemplateResponse(
            request, "model_live.html", {
                "model": model, "replicas": source.replicas(model),
                "events": source.events(model, EVENTS_SHOWN),
            },
        )  # fmt: skip

    async def series(request: Request) -> Response:
        model = _find(source.resources("Model"), request)
        if not isinstance(model, Model):
            return JSONResponse({"error": "no such model"}, 404)
        return JSONResponse(series_columns(list(source.series(model))))

    async def training(request: Request) -> Response:
        jobs = sorted(source.resources("TrainingJob"), key=_order)
        return render(
            request, "training.html", "training_table.html", jobs=jobs,
            carried=source.carries("TrainingJob"),
        )  # fmt: skip

    async def prompts(request: Request) -> Response:
        found = sorted(source.resources("Prompt"), key=_order)
        rows = [{"prompt": p, "fields": _spec_fields(p, skip=("template", "model"))} for p in found]
        return render(
            request, "prompts.html", "prompts_table.html", rows=rows,
            carried=source.carries("Prompt"),
        )  # fmt: skip

    async def spend(request: Request) -> Response:
        report = source.spend()
        budgets = [] if report is None else [(b, budget_rows(b)) for b in report["budgets"]]
        return render(request, "spend.html", "spend_tables.html", report=report, budgets=budgets)

    async def carbon(request: Request) -> Response:
        jobs = [
            j for j in sorted(source.resources("TrainingJob"), key=_order)
            if isinstance(j, TrainingJob) and j.spec.deferrable
        ]  # fmt: skip
        view = source.carbon()
        ahead = {"t": [t for t, _ in view.ahead], "g_per_kwh": [g for _, g in view.ahead]}
        return render(
            request, "carbon.html", "carbon_now.html", carbon=view, ahead=ahead, jobs=jobs
        )

    return Starlette(
        routes=[
            Route("/", models_page),
            Route("/models/{namespace}/{name}", model_part),
            Route("/series/{namespace}/{name}", series),
            Route("/training", training),
            Route("/prompts", prompts),
            Route("/spend", spend),
            Route("/carbon", carbon),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
    )


def _find(resources: Sequence[Resource], request: Request) -> Resource | None:
    p = request.path_params
    return next(
        (
            r
            for r in resources
            if r.metadata.namespace == p["namespace"] and r.metadata.name == p["name"]
        ),
        None,
    )


def _order(resource: Resource) -> tuple[str, str]:
    return resource.metadata.namespace, resource.metadata.name


def _spec_fields(resource: Resource, skip: tuple[str, ...]) -> dict[str, Any]:
    """A spec's fields as written (camelCase), less ``skip``: fields this schema gains later
    (canary weights, more versions) show up without a change here."""
    spec = getattr(resource, "spec", None)
    if spec is None:
        return {}
    dumped: dict[str, Any] = spec.model_dump(mode="json", by_alias=True)
    return {k: v for k, v in dumped.items() if k not in skip}
