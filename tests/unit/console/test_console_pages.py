"""The console's pages over a ``FixedSource``: a stand-in for a mode, holding what a mode would
report, so each page's rendering is checked without starting one (the browser tests in
``tests/integration/local/test_console.py`` and ``tests/e2e/test_console_cluster.py`` run the
real modes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from starlette.testclient import TestClient

from kapell.api import Model, Prompt, Resource, TrainingJob
from kapell.console.app import budget_rows, console_app, gpu_request
from kapell.console.series import Sample
from kapell.console.source import CarbonView, Event, ReplicaRow


def model(gpu: dict[str, Any] | None = None) -> Model:
    spec: dict[str, Any] = {"source": {"uri": "h100-llama3-8b"}, "engine": {"name": "sim"}}
    if gpu is not None:
        spec["resources"] = {"gpu": gpu}
    return Model.model_validate({"metadata": {"name": "chat", "namespace": "team-a"}, "spec": spec})


JOB = TrainingJob.model_validate({
    "metadata": {"name": "tiny", "namespace": "team-a"},
    "spec": {"entrypoint": "python train.py", "deferrable": True, "deadline": "12h",
             "expectedDuration": "2h"},
    "status": {"plannedStart": "2026-12-02T14:00:00Z", "plannedGCo2": 812.5, "atOnceGCo2": 1020.25,
               "phase": "Running", "step": 75, "loss": 1.875, "checkpoints": 3,
               "lastCheckpointStep": 75, "attempt": 1},
})  # fmt: skip
PROMPT = Prompt.model_validate({
    "metadata": {"name": "greeter", "namespace": "team-a"},
    "spec": {"model": "chat", "template": "Greet {{name}}.", "variables": ["name"], "version": 4},
})  # fmt: skip


@dataclass
class FixedSource:
    """A ``ConsoleSource`` that answers with what it was given."""

    mode: Literal["local", "kubernetes"] = "kubernetes"
    items: dict[str, list[Resource]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    view: CarbonView = field(default_factory=lambda: CarbonView(None))
    kinds: tuple[str, ...] = ("Model", "TrainingJob", "Prompt")

    def resources(self, kind: str) -> Sequence[Resource]:
        return self.items.get(kind, [])

    def carries(self, kind: str) -> bool:
        return kind in self.kinds

    def replicas(self, model: Model) -> Sequence[ReplicaRow]:
        return [ReplicaRow("team-a/chat-1a2b3-0", "Ready", "1a2b3", 0, "", "node-3 GPU 2")]

    def events(self, model: Model, limit: int) -> Sequence[Event]:
        return [Event("2026-01-01T00:00:00Z", "chat-1a2b3-0", "Ready", "")]

    def series(self, model: Model) -> Sequence[Sample]:
        return [Sample(100.0, 42.5, 12.0, None, 1, 2, 1, 1)]

    def spend(self) -> dict[str, Any] | None:
        return self.report

    def carbon(self) -> CarbonView:
        return self.view


def client(source: FixedSource) -> TestClient:
    return TestClient(console_app(source))


def test_models_page_shows_replicas_placement_and_the_latest_sample() -> None:
    page = client(FixedSource(items={"Model": [model({"count": 2})]})).get("/")
    assert page.status_code == 200
    text = page.text
    assert 'data-model="chat"' in text and "node-3 GPU 2" in text and "42.5" in text
    assert text.count('class="chart"') == 3 and "htmx.min.js" in text and "uPlot" in text


def test_an_htmx_refresh_gets_only_the_live_part() -> None:
    live = client(FixedSource(items={"Model": [model()]})).get("/", headers={"HX-Request": "true"})
    assert "<html" not in live.text and 'data-model="chat"' in live.text


def test_series_are_columns_and_an_unknown_model_is_a_404() -> None:
    app = client(FixedSource(items={"Model": [model()]}))
    columns = app.get("/series/team-a/chat").json()
    assert columns["t"] == [100.0] and columns["tokens_per_s"] == [42.5]
    assert columns["latency_p95_ms"] == [None]
    assert app.get("/series/team-a/nope").status_code == 404
    assert app.get("/models/team-b/chat").status_code == 404


def test_training_page_shows_phase_step_loss_and_checkpoints() -> None:
    text = client(FixedSource(items={"TrainingJob": [JOB]})).get("/training").text
    for shown in ("tiny", "Running", "75", "1.8750", "step 75"):
        assert shown in text


def test_prompts_page_shows_every_spec_field_but_the_template_body() -> None:
    text = client(FixedSource(items={"Prompt": [PROMPT]})).get("/prompts").text
    assert "<dt>version</dt><dd>4</dd>" in text and "<dt>variables</dt>" in text
    assert "Greet {{name}}." in text


def test_prompts_page_shows_canary_weights_where_the_schema_has_them() -> None:
    rolled = Prompt.model_validate({
        **PROMPT.model_dump(by_alias=True, exclude={"status"}),
        "status": {"phase": "Progressing", "versions": [
            {"version": 3, "weight": 90, "state": "Stable"},
            {"version": 4, "weight": 10, "state": "Canary"},
        ]},
    })  # fmt: skip
    text = client(FixedSource(items={"Prompt": [rolled]})).get("/prompts").text
    assert "v3: 90% (Stable)" in text and "v4: 10% (Canary)" in text and "Progressing" in text
    plain = client(FixedSource(items={"Prompt": [PROMPT]})).get("/prompts").text
    assert 'class="weights">–<' in plain


def test_what_a_mode_does_not_carry_is_said_not_left_blank() -> None:
    app = client(FixedSource(kinds=("Model",)))
    assert "not run in this mode yet" in app.get("/training").text
    assert "not carried in this mode yet" in app.get("/prompts").text
    assert "No spend is accounted in this mode" in app.get("/spend").text
    assert "No carbon-intensity source configured" in app.get("/carbon").text


def test_carbon_page_lists_deferrable_jobs_and_draws_the_hours_ahead() -> None:
    view = CarbonView("a file", 250.0, [(0.0, 250.0), (3600.0, 180.0)])
    text = client(FixedSource(items={"TrainingJob": [JOB]}, view=view)).get("/carbon").text
    assert 'id="intensity-now">250<' in text and '"g_per_kwh": [250.0, 180.0]' in text
    assert "tiny" in text and "2026-12-02T14:00:00Z" in text
    assert "812.5" in text and "1020.2" in text


def test_budget_rows_say_what_is_used_of_each_limit() -> None:
    budget = {
        "limits": {"tokens": 300, "gramsCo2": 2.0},
        "remaining": {"tokens": 0, "gramsCo2": 1.5},
    }
    tokens, co2 = budget_rows(budget)
    assert (tokens["used"], tokens["share"], tokens["unit"]) == (300, 1.0, "tokens")
    assert co2["used"] == pytest.approx(0.5) and co2["share"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("gpu", "words"),
    [
        (None, "none"),
        ({"count": 2, "models": ["H100-80GB"]}, "2 x H100-80GB"),
        ({"migProfile": "3g.40gb"}, "MIG 3g.40gb"),
        ({"milli": 250, "sharing": "mps"}, "250/1000 (mps)"),
    ],
)
def test_a_gpu_request_in_words(gpu: dict[str, Any] | None, words: str) -> None:
    assert gpu_request(model(gpu)) == words


def test_the_operator_endpoint_mounts_the_console_beside_its_probes() -> None:
    import threading

    from prometheus_client import CollectorRegistry

    from kapell.cli.operator_api import operator_app
    from kapell.control.demand import DemandBoard

    app = operator_app(
        DemandBoard(), threading.Event(), CollectorRegistry(), lambda model: None,
        console=console_app(FixedSource(items={"Model": [model()]})),
    )  # fmt: skip
    with TestClient(app) as endpoint:
        page = endpoint.get("/console/")
        assert page.status_code == 200 and 'data-model="chat"' in page.text
        assert 'href="/console/training"' in page.text, "links do not follow the mount"
        assert endpoint.get("/console/static/vendor/htmx.min.js").status_code == 200
        assert endpoint.get("/healthz").text == "ok"
