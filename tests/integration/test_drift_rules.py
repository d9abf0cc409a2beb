"""The shipped drift alert rules: valid for promtool, and firing on the series they should.

``promtool test rules`` evaluates the rules on synthetic series, with Prometheus' own engine:
a feature above its threshold for longer than ``for`` fires its alert, one below does not, and
latency fires only its own alert, only once the gateway has said it drifts (past its effect
floor) for the alert's longer ``for``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

RULES = Path(__file__).resolve().parents[2] / "deploy/prometheus/kapell-drift-rules.yaml"
KEY = 'model="chat",prompt="greet",version="2"'

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool (apt-get install prometheus)"
)


def series(feature: str, direction: str, **values: str) -> list[dict[str, str]]:
    """Input series of one feature: ``psi="0.01 0.5x5"`` is ``kapell_drift_psi``'s values."""
    labels = f'{KEY},feature="{feature}",direction="{direction}"'
    return [
        {"series": f"kapell_drift_{name}{{{labels}}}", "values": v} for name, v in values.items()
    ]


def alert(
    feature: str, direction: str, severity: str, summary: str, value: str
) -> dict[str, object]:
    labels = {"model": "chat", "prompt": "greet", "version": "2", "feature": feature,
              "direction": direction, "severity": severity}  # fmt: skip
    if feature == "latency_s":
        description = (
            f"Request latency of model chat (prompt 'greet' version '2') moved to {value} times "
            "the reference window's (median or p90), past the effect floor, and its PSI is above "
            "its threshold. Load on its replicas moves latency as much as the traffic does; see "
            "`kapell drift` and the queue metrics."
        )
    else:
        description = (
            f"The {feature} of requests to model chat (prompt 'greet' version '2') differs "
            f"from the reference window: PSI {value} is above its threshold. `kapell drift` shows "
            "every feature."
        )
    annotations = {"summary": summary, "description": description}
    return {"exp_labels": labels, "exp_annotations": annotations}


def test_promtool_accepts_the_rules_and_they_fire_as_documented(tmp_path: Path) -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 3 rules found" in check.stdout
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "30s",
        "tests": [{
            "interval": "30s",
            "input_series": [
                *series("prompt_chars", "input", psi="0.01 0.5x5", psi_threshold="0.06x5"),
                *series("outcome", "output", psi="0.01x5", psi_threshold="0.06x5"),
                # latency: significant throughout, past its floor (drifting) from 1m30s on, and
                # firing once that has lasted its 10m
                *series("latency_s", "output", psi="0.3x33", psi_threshold="0.06x33",
                        shift_ratio="1.4 1.4 1.4 2.5x30", drifting="0 0 0 1x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "30s", "alertname": "KapellInputDrift", "exp_alerts": []},
                {"eval_time": "2m", "alertname": "KapellInputDrift",
                 "exp_alerts": [alert("prompt_chars", "input", "warning",
                                          "What users send to chat drifts (prompt_chars)", "0.500")]},
                {"eval_time": "2m", "alertname": "KapellOutputDrift", "exp_alerts": []},
                {"eval_time": "1m", "alertname": "KapellLatencyDrift", "exp_alerts": []},
                {"eval_time": "11m", "alertname": "KapellLatencyDrift", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "KapellLatencyDrift",
                 "exp_alerts": [alert("latency_s", "output", "info",
                                          "Latency of chat drifts", "2.50")]},
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "drift_test.yaml"
    with path.open("w") as f:
        YAML().dump(tests, f)
    run = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
