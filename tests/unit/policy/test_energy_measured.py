"""Kepler's Prometheus text (observe.power); NVML is tested in tests/unit/observe."""

from __future__ import annotations

import pytest

from kapell.observe.power import parse_kepler_pod_joules

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
