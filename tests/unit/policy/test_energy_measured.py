"""Measured energy readers (observe.power): Kepler's Prometheus text, NVML's clear absence."""

from __future__ import annotations

import importlib.util

import pytest

from kapell.api.errors import BackendError
from kapell.observe.power import parse_kepler_pod_joules, read_nvml

KEPLER = """\
# HELP kepler_pod_cpu_joules_total Energy consumption of cpu at pod level in joules
# TYPE kepler_pod_cpu_joules_total counter
kepler_pod_cpu_joules_total{pod_name="qwen-0",pod_namespace="ai",zone="package"} 120.5
kepler_pod_cpu_joules_total{pod_name="qwen-0",pod_namespace="ai",zone="core"} 100.0
kepler_pod_cpu_joules_total{pod_name="qwen-0",pod_namespace="ai",zone="dram"} 10.0
kepler_pod_cpu_joules_total{pod_name="web-1",pod_namespace="ai",zone="package"} 3.0
# HELP kepler_pod_gpu_joules_total Energy consumption of gpu at pod level in joules
# TYPE kepler_pod_gpu_joules_total counter
kepler_pod_gpu_joules_total{pod_name="qwen-0",pod_namespace="ai",gpu="0"} 5000.0
# HELP kepler_node_cpu_joules_total Node energy
# TYPE kepler_node_cpu_joules_total counter
kepler_node_cpu_joules_total{zone="package"} 99999.0
"""


def test_kepler_pod_joules_sum_package_dram_and_gpu_without_double_counting() -> None:
    joules = parse_kepler_pod_joules(KEPLER)
    assert joules == {"ai/qwen-0": pytest.approx(5130.5), "ai/web-1": pytest.approx(3.0)}


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is not None, reason="NVML installed")
def test_nvml_absence_is_a_one_line_instruction() -> None:
    with pytest.raises(BackendError, match=r"pip install 'kapell\[nvidia\]'"):
        read_nvml()
