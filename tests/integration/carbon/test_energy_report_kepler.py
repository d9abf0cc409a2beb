"""``kapell energy report --kepler URL``: pods' joules from a Kepler endpoint label rows measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .stub_http import serve

# Kepler 0.10+ names (kepler_pod_cpu_joules_total per RAPL zone, kepler_pod_gpu_joules_total).
KEPLER = """\
# HELP kepler_pod_cpu_joules_total Energy consumption of cpu at pod level in joules
# TYPE kepler_pod_cpu_joules_total counter
kepler_pod_cpu_joules_total{pod_name="llama-0a1b2c3d4e-0",pod_namespace="ai",zone="package"} 900.0
kepler_pod_cpu_joules_total{pod_name="llama-0a1b2c3d4e-0",pod_namespace="ai",zone="core"} 800.0
kepler_pod_cpu_joules_total{pod_name="llama-0a1b2c3d4e-0",pod_namespace="ai",zone="dram"} 100.0
# HELP kepler_pod_gpu_joules_total Energy consumption of gpu at pod level in joules
# TYPE kepler_pod_gpu_joules_total counter
kepler_pod_gpu_joules_total{pod_name="llama-0a1b2c3d4e-0",pod_namespace="ai",gpu="0"} 40000.0
kepler_pod_gpu_joules_total{pod_name="llama-0a1b2c3d4e-1",pod_namespace="ai",gpu="1"} 9000.0
"""
USAGE = {
    "models": [
        {"model": name, "engine": "vllm", "gpu_model": "H100", "gpu_milli": 1000, "replicas": 2,
         "replica_seconds": 200.0, "busy_seconds": 100.0, "requests": 50,
         "prompt_tokens": 4000, "generated_tokens": 6000}
        for name in ("llama", "qwen")
    ]
}  # fmt: skip


def _answer(path: str, query: dict[str, list[str]], headers: dict[str, str]):
    if path == "/metrics":
        return 200, KEPLER
    if path == "/admin/v1/usage":
        return 200, USAGE
    return 404, {"error": "not found"}


def _report(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kapell.cli", "energy", "report", "--json", *args],
        env=os.environ | {"KAPELL_ADMIN": admin}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_pods_kepler_metered_are_measured_and_the_others_modelled() -> None:
    with serve(_answer) as url:
        result = _report(url, "--kepler", url + "/metrics")
        plain = _report(url)
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["llama"]["source"] == "measured"
    assert rows["llama"]["energy_j"] == pytest.approx(900 + 100 + 40000 + 9000)
    assert rows["llama"]["joules_per_request"] == pytest.approx(50000 / 50)
    assert rows["qwen"]["source"] == "modelled"
    assert {r["source"] for r in json.loads(plain.stdout)["models"]} == {"modelled"}


def test_an_unreachable_kepler_is_a_one_line_error() -> None:
    with serve(_answer) as url:
        result = _report(url, "--kepler", "http://127.0.0.1:9/metrics")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no Kepler metrics at http://127.0.0.1:9/metrics")
    assert len(result.stderr.strip().splitlines()) == 1
