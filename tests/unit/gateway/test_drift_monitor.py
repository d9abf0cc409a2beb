"""The gateway's drift windows per (model, prompt, version), as /metrics and the admin API
show them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from kapell.gateway.drift import DriftMonitor, prompt_key
from kapell.observe.drift_metrics import DriftCollector
from kapell.policy.drift import DriftSettings

SETTINGS = DriftSettings(reference_requests=50, window_requests=50, warmup_requests=5, max_keys=2)


def feed(monitor: DriftMonitor, key: tuple[str, str, str], text: str, count: int) -> None:
    for i in range(count):
        monitor.observe(key, text * (1 + i % 7), 10 + i % 5, 0.1 + (i % 9) / 100, 200)


def test_prompt_key_reads_the_responses_style_prompt_object() -> None:
    assert prompt_key({"prompt": {"id": "greet", "version": 2}}) == ("greet", "2")
    assert prompt_key({"prompt": {"id": "greet"}}) == ("greet", "")
    assert prompt_key({"prompt": "a completion prompt"}) == ("", "")
    assert prompt_key({}) == ("", "")


def test_each_key_warms_up_fills_its_reference_then_compares_windows() -> None:
    monitor = DriftMonitor(SETTINGS)
    feed(monitor, ("chat", "", ""), "hello there ", 5 + 50 + 50 + 20)
    feed(monitor, ("chat", "greet", "2"), "hello there ", 30)
    report = monitor.report()
    assert report["settings"]["warmupRequests"] == 5
    assert report["settings"]["latencyShift"] == 1.0
    first, second = report["keys"]
    assert (first["model"], first["prompt"], first["version"]) == ("chat", "", "")
    assert (first["referenceRequests"], first["currentRequests"]) == (50, 20)
    assert first["windowsCompared"] == 1 and first["drifting"] is False
    assert {f["feature"] for f in first["features"]} == {
        "prompt_chars", "script", "output_tokens", "latency_s", "outcome",
    }  # fmt: skip
    assert (second["prompt"], second["version"], second["referenceRequests"]) == ("greet", "2", 25)
    assert second["drifting"] is None and second["features"] == []
    latency = next(f for f in first["features"] if f["feature"] == "latency_s")
    assert latency["shiftFloor"] == 2.0 and latency["shift"] > 0


def test_keys_beyond_the_limit_are_counted_not_tracked() -> None:
    monitor = DriftMonitor(SETTINGS)
    for prompt in ("a", "b", "c"):
        feed(monitor, ("chat", prompt, "1"), "x", 3)
    assert [k["prompt"] for k in monitor.report()["keys"]] == ["a", "b"]
    assert monitor.report()["untrackedRequests"] == 3


def test_a_shift_shows_on_metrics_with_its_threshold() -> None:
    monitor = DriftMonitor(SETTINGS)
    key = ("chat", "greet", "2")
    feed(monitor, key, "hello there ", 105)
    feed(monitor, key, "Здравствуйте, как поживаете? " * 20, 50)
    registry = CollectorRegistry()
    registry.register(DriftCollector(monitor.report))
    text = generate_latest(registry).decode()
    labels = 'direction="input",feature="script",model="chat",prompt="greet",version="2"'
    psi = float(text.split(f"kapell_drift_psi{{{labels}}} ")[1].split()[0])
    limit = float(text.split(f"kapell_drift_psi_threshold{{{labels}}} ")[1].split()[0])
    assert psi > limit > 0
    assert f"kapell_drift_drifting{{{labels}}} 1.0" in text
    assert f"kapell_drift_shift_ratio{{{labels}}}" not in text  # a category has no median
    latency = labels.replace('"input"', '"output"').replace('"script"', '"latency_s"')
    assert f"kapell_drift_drifting{{{latency}}} 0.0" in text
    assert float(text.split(f"kapell_drift_shift_ratio{{{latency}}} ")[1].split()[0]) > 0
    assert (
        'kapell_drift_windows_compared_total{model="chat",prompt="greet",version="2"} 2.0' in text
    )
    assert (
        'kapell_drift_window_requests{model="chat",prompt="greet",version="2",window="reference"} 50.0'
        in text
    )
    assert "kapell_drift_false_alarm_rate 0.001" in text
