"""The web console in a real browser against a real `kapell up` (sim engine, openai client).

Headless Chromium opens each page, and what it shows is checked against the admin API the CLI
reads: the model's ready replicas and their ids, the tokens accounted per tenant, the budget,
the prompt's version, the carbon intensity now. The plots are uPlot charts drawn from the
console's series (a canvas each, with points). Each page is saved as a screenshot
(``docs/console.md`` shows them; ``make console-screenshots`` refreshes ``docs/img``).
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from tests.integration.browser import browser, needs_chromium, screenshot, wait_until
from tests.integration.local.conftest import Instance

__all__ = ["browser"]  # the fixture, imported so pytest finds it here
pytestmark = needs_chromium

SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: chat, namespace: team-a}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.3", "--speedup", "20"]}
  scaling: {minReplicas: 2, maxReplicas: 4}
  resources: {gpu: {migProfile: 3g.40gb, models: [H100-80GB]}}
---
apiVersion: kapell.dev/v1alpha1
kind: Budget
metadata: {name: daily, namespace: team-a}
spec:
  period: day
  limits: {tokens: 20000, gramsCo2: 2}
---
apiVersion: kapell.dev/v1alpha1
kind: Prompt
metadata: {name: greeter, namespace: team-a}
spec:
  model: chat
  template: "You are a friendly assistant. Greet {{name}} in one sentence."
  variables: [name]
  version: 3
"""


def intensity_csv(path: Path, now_s: float) -> dict[int, float]:
    """An hourly intensity file (Let's Wait Awhile's format) around now: a daily wave."""
    values = {h: 300 + 120 * math.sin(h / 24 * 2 * math.pi) for h in range(-2, 30)}
    start = int(now_s // 3600) * 3600
    rows = [
        f"{datetime.fromtimestamp(start + h * 3600, UTC):%Y-%m-%d %H:%M:%S},{g:.1f}"
        for h, g in values.items()
    ]
    path.write_text("Time,Carbon Intensity\n" + "\n".join(rows) + "\n")
    return {start + h * 3600: round(g, 1) for h, g in values.items()}


def admin(instance: Instance, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(instance.admin_url + "/admin/v1" + path, timeout=5) as r:
        return dict(json.loads(r.read()))


def cells(driver: Any, selector: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def charts_drawn(driver: Any, minimum_points: int) -> bool:
    """Every chart on the page is a uPlot canvas with at least ``minimum_points`` points."""
    return bool(
        driver.execute_script(
            "const figures = [...document.querySelectorAll('figure.chart')];"
            "return figures.length > 0 && figures.every(f => f.querySelector('canvas')"
            " && Number(f.dataset.points || (f.dataset.drawn ? 1e9 : 0)) >= arguments[0]);",
            minimum_points,
        )
    )


def test_each_console_page_shows_what_the_admin_api_says(
    kapell_up: Callable[..., Instance], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    readings = intensity_csv(tmp_path / "intensity.csv", time.time())
    instance = kapell_up(
        SPEC, ready=2, args=("--carbon-intensity", str(tmp_path / "intensity.csv"))
    )
    client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0)
    for i in range(24):
        client.chat.completions.create(
            model="chat", max_tokens=24 + i, messages=[{"role": "user", "content": f"hi {i}"}]
        )
        time.sleep(0.1)  # requests over a few seconds: several points on the plots
    status = instance.status()
    console_url = status["console_url"]

    # Models: the table, the replicas (ids as the admin API lists them) and three drawn charts.
    browser.get(console_url)
    assert "kapell" in browser.title
    replica_ids = sorted(r["id"] for r in instance.replicas())
    assert len(replica_ids) == 2
    wait_until(lambda: cells(browser, "tr[data-model=chat] td.ready") == ["2"], 10, "2 ready")
    wait_until(
        lambda: sorted(cells(browser, "tr.replica.Ready td:first-child")) == replica_ids,
        10,
        "the admin API's replica ids",
    )
    assert "MIG 3g.40gb" in browser.find_element(By.ID, "model-team-a-chat").text

    # Scale to three: the open page follows (htmx swaps its parts in; no reload).
    (tmp_path / "spec.yaml").write_text(SPEC.replace("minReplicas: 2", "minReplicas: 3"))
    assert instance.kapell("apply", "-f", str(tmp_path / "spec.yaml")).returncode == 0
    browser.execute_script("document.body.dataset.loaded = 'once'")
    instance.wait_for(lambda: len(instance.replicas()) == 3, 30, "3 ready replicas")
    replica_ids = sorted(r["id"] for r in instance.replicas())
    wait_until(lambda: cells(browser, "tr[data-model=chat] td.ready") == ["3"], 10, "3 ready")
    wait_until(
        lambda: sorted(cells(browser, "tr.replica.Ready td:first-child")) == replica_ids,
        10,
        "the admin API's replica ids after the scale-up",
    )
    assert browser.execute_script("return document.body.dataset.loaded") == "once", "reloaded"
    wait_until(lambda: charts_drawn(browser, 3), 15, "three uPlot charts with points")
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart canvas")) == 3
    series = json.loads(urllib.request.urlopen(console_url + "series/team-a/chat").read())
    assert max(series["tokens_per_s"]) > 0, "the tokens/s plot saw no traffic"
    assert any(p is not None for p in series["latency_p50_ms"]), "no latency sampled"
    events = cells(browser, "#model-team-a-chat table.events td:nth-child(3)")
    assert "Ready" in events and "Scaled" in events, events
    scaled = cells(browser, "#model-team-a-chat table.events td:nth-child(4)")
    assert "desired replicas 0 -> 2" in scaled and "desired replicas 2 -> 3" in scaled, scaled
    assert "Scaled" in instance.kapell("describe", "model", "chat", "-n", "team-a").stdout
    screenshot(browser, tmp_path, "models")

    # Spend: the accounted tokens per tenant match /admin/v1/spend once the ledger settles.
    def spend_matches() -> bool:
        browser.get(console_url + "spend")
        report = admin(instance, "/spend")
        rows = {
            f"{r['namespace']}/{r['tenant']}/{r['period']}": r["tokensIn"] for r in report["rows"]
        }
        shown = {
            e.get_attribute("data-row"): e.find_element(By.CSS_SELECTOR, ".tokens-in").text
            for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-row]")
        }
        return bool(rows) and shown == {k: str(v) for k, v in rows.items()}

    wait_until(spend_matches, 15, "the spend table to match the admin API")
    budget = browser.find_element(By.CSS_SELECTOR, "article[data-budget='team-a/daily']")
    assert budget.find_elements(By.CSS_SELECTOR, "meter"), "no budget meter"
    assert "within budget" in budget.text
    screenshot(browser, tmp_path, "spend")

    # Prompts: the version, its weight as the rollout controller wrote it, the spec's fields.
    browser.get(console_url + "prompts")

    def prompt_row_shows_the_stable_version() -> bool:
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-prompt=greeter]")
        return "Greet {{name}}" in row.text and "v3: 100% (Stable)" in row.text

    wait_until(prompt_row_shows_the_stable_version, 15, "the prompt's version and weight")
    screenshot(browser, tmp_path, "prompts")

    # Carbon: the reading now is the file's reading nearest now, and the next hours are drawn.
    browser.get(console_url + "carbon")
    now = time.time()
    nearest = readings[min(readings, key=lambda t: abs(t - now))]
    assert browser.find_element(By.ID, "intensity-now").text == f"{nearest:.0f}"
    wait_until(lambda: charts_drawn(browser, 1), 10, "the intensity chart")
    screenshot(browser, tmp_path, "carbon")

    # Training: none applied here (a Ray cluster per job is minutes); the page says so.
    browser.get(console_url + "training")
    assert "No TrainingJob" in browser.find_element(By.TAG_NAME, "main").text
