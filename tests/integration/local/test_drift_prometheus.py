"""Drift alerts in a real Prometheus scraping a real `kapell up` (sim engine, openai client).

Prometheus (Debian's package; `.ci/run` installs it) scrapes the gateway every second and
evaluates the shipped rules (deploy/prometheus/kapell-drift-rules.yaml, with ``for`` cut to
2 s, latency's to 6 s, so the test is short). A stationary stream (English-like prompts, lengths
and ``max_tokens`` drawn from fixed distributions) passes the warm-up, fills the reference and
then windows for longer than latency's ``for``, and fires no alert, latency's included (no
other alert is even pending):
its samples follow the shared machine's load, which the stream does not set, so latency drifts
only past an effect floor and its alert waits longer than the machine's load swings last. Then
prompts from another corpus (Cyrillic, about five times longer) make KapellInputDrift fire, and
answers eight times longer make KapellLatencyDrift fire, each within the stated bound: the time
to fill one window, plus one scrape, the ``for`` and two rule evaluations.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from ruamel.yaml import YAML

from kapell.net import free_port, wait_http
from tests.integration.local.conftest import Instance
from tests.integration.local.test_local_backend import SPEC as SIM_SPEC

RULES = Path(__file__).resolve().parents[3] / "deploy/prometheus/kapell-drift-rules.yaml"
WINDOW = 100
SCRAPE_S = EVAL_S = 1.0
FOR_S = 2.0
LATENCY_FOR_S = 6.0
"""Longer than the load swings of this shared machine: under stress switched on and off every
2 s, windows of 100 drifted (past the floor) for at most 3.3 s in a row (docs/llmops.md)."""
SLACK_S = 2.0  # a loaded machine's scheduling
ALERT_BOUND_S = SCRAPE_S + 2 * EVAL_S + FOR_S + SLACK_S
LATENCY_BOUND_S = SCRAPE_S + 2 * EVAL_S + LATENCY_FOR_S + SLACK_S
SPEC = SIM_SPEC.replace("SPEEDUP", "1").replace("REPLICAS", "1")
ENGLISH = "the of and to in a is that for it as with was on be by at this have from or".split()  # noqa: SIM905
CYRILLIC = "и в не на я быть он с что а по это она этот к но они мы как из у который".split()  # noqa: SIM905

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="no prometheus (apt-get install prometheus)"
)


def corpus(
    words: list[str], mean_chars: float, seed: int, answer_scale: int = 1
) -> Iterator[tuple[str, int]]:
    """Endless (prompt, max_tokens) pairs: log-normal prompt lengths, uniform max_tokens (8 to
    32, times ``answer_scale``)."""
    rng = np.random.default_rng(seed)
    while True:
        target = max(8, int(rng.lognormal(np.log(mean_chars), 0.6)))
        text: list[str] = []
        while sum(len(w) + 1 for w in text) < target:
            text.append(str(rng.choice(words)))
        yield " ".join(text), answer_scale * int(rng.integers(8, 33))


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start Prometheus on a free port scraping the gateway at the URL given; its base URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(gateway_url: str) -> str:
        rules = YAML(typ="safe").load(RULES.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                latency = rule["alert"] == "KapellLatencyDrift"
                rule["for"] = f"{LATENCY_FOR_S if latency else FOR_S:g}s"
        yaml = YAML()
        with (tmp_path / "rules.yaml").open("w") as f:
            yaml.dump(rules, f)
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{EVAL_S:g}s"},
            "rule_files": [str(tmp_path / "rules.yaml")],
            "scrape_configs": [{
                "job_name": "kapell-gateway",
                "static_configs": [{"targets": [gateway_url.removeprefix("http://")]}],
            }],
        }  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))
        port = free_port()
        process = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/-/ready", timeout_s=30, process=process)
        return url

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class AlertWatch(threading.Thread):
    """Polls Prometheus' /api/v1/alerts and keeps every alert seen, with when it was seen."""

    def __init__(self, prometheus_url: str) -> None:
        super().__init__(daemon=True)
        self.url = prometheus_url + "/api/v1/alerts"
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            now = time.monotonic()
            self.seen += [(now, a) for a in get(self.url)["data"]["alerts"]]

    def firing(self, name: str) -> float | None:
        times = [
            t for t, a in self.seen if a["labels"]["alertname"] == name and a["state"] == "firing"
        ]
        return min(times) if times else None

    def wait_firing(self, name: str, deadline: float) -> None:
        while self.firing(name) is None and time.monotonic() < deadline:
            time.sleep(0.1)


class Sender:
    """Chat requests from sixteen threads with one client (connections stay open between
    batches, as a steady stream of users keeps them)."""

    def __init__(self, instance: Instance) -> None:
        self.client = openai.OpenAI(
            base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0
        )
        self.pool = ThreadPoolExecutor(16)

    def one(self, request: tuple[str, int]) -> None:
        text, max_tokens = request
        self.client.chat.completions.create(
            model="chat", max_tokens=max_tokens, messages=[{"role": "user", "content": text}]
        )

    def send(self, requests: Iterator[tuple[str, int]], count: int) -> float:
        """``count`` requests; when the last one finished."""
        list(self.pool.map(self.one, [next(requests) for _ in range(count)]))
        return time.monotonic()


def compared(prometheus_url: str) -> float:
    """Windows compared, as Prometheus last scraped it (0 before any)."""
    query = "kapell_drift_windows_compared_total"
    result = get(f"{prometheus_url}/api/v1/query?query={query}")["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


@pytest.mark.slow
def test_a_shift_fires_the_drift_alert_and_a_stationary_stream_does_not(
    kapell_up: Callable[..., Instance], prometheus: Callable[[str], str]
) -> None:
    instance = kapell_up(
        SPEC,
        args=("--drift-warmup", str(WINDOW), "--drift-reference", str(WINDOW),
              "--drift-window", str(WINDOW), "--drift-false-alarm-rate", "0.0001"),
    )  # fmt: skip
    prom = prometheus(instance.gateway_url)
    watch = AlertWatch(prom)
    watch.start()
    sender = Sender(instance)
    try:
        english = corpus(ENGLISH, 200, seed=1)
        sender.send(english, WINDOW * 3)  # warm-up, reference, a first window
        first_window = time.monotonic()
        while time.monotonic() - first_window < LATENCY_FOR_S + 2 * EVAL_S + SLACK_S:
            sender.send(english, WINDOW)
        deadline = time.monotonic() + 10
        while compared(prom) < 3:
            assert time.monotonic() < deadline, "Prometheus did not scrape the third window"
            time.sleep(0.2)
        time.sleep(EVAL_S + FOR_S + EVAL_S)  # long enough for an alert to fire, if one would
        state = instance.kapell("drift")
        print(f"\nstationary:\n{state.stdout}")
        alerts = {a["labels"]["alertname"]: a for _, a in watch.seen}
        assert not alerts.keys() - {"KapellLatencyDrift"}, f"stationary: {alerts}\n{state.stdout}"
        assert watch.firing("KapellLatencyDrift") is None, f"stationary: {alerts}\n{state.stdout}"
        print(f"latency drift pending on the stationary stream: {'KapellLatencyDrift' in alerts}")

        shift_start = time.monotonic()
        input_full = sender.send(corpus(CYRILLIC, 1000, seed=2), WINDOW)
        watch.wait_firing("KapellInputDrift", input_full + ALERT_BOUND_S + 1)
        input_state = json.loads(instance.kapell("drift", "--json").stdout)
        longer = corpus(ENGLISH, 200, seed=3, answer_scale=8)
        latency_full = sender.send(longer, WINDOW)
        while watch.firing("KapellLatencyDrift") is None:  # the shift lasts until it fires
            if time.monotonic() > latency_full + LATENCY_BOUND_S + 1:
                raise AssertionError(f"no latency alert: {instance.kapell('drift').stdout}")
            sender.send(longer, WINDOW // 4)
    finally:
        watch.done.set()
        sender.pool.shutdown()
    fired = watch.firing("KapellInputDrift")
    assert fired is not None, f"no input alert {ALERT_BOUND_S}s after the window: {input_state}"
    after_window_s, after_shift_s = fired - input_full, fired - shift_start
    print(
        f"\ninput drift alert: fired {after_window_s:.1f}s after the shifted window filled "
        f"(bound {ALERT_BOUND_S:g}s), {after_shift_s:.1f}s after the shift began"
    )
    assert after_window_s <= ALERT_BOUND_S
    features = {f["feature"]: f for f in input_state["keys"][0]["features"]}
    assert features["prompt_chars"]["drifting"] and features["script"]["drifting"]

    state = instance.kapell("drift", "--json")
    fired = watch.firing("KapellLatencyDrift")
    assert fired is not None
    features = {f["feature"]: f for f in json.loads(state.stdout)["keys"][0]["features"]}
    print(
        f"latency drift alert: fired {fired - latency_full:.1f}s after the first window of "
        f"longer answers filled (bound {LATENCY_BOUND_S:g}s); latency "
        f"{features['latency_s']['shift']:.2f}× the reference"
    )
    assert fired - latency_full <= LATENCY_BOUND_S
    assert features["latency_s"]["drifting"] and features["latency_s"]["shift"] >= 2
    table = instance.kapell("drift")
    assert table.returncode == 0 and "drifting" in table.stdout and "latency_s" in table.stdout
