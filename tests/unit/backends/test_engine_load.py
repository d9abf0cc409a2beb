"""Reading an engine's waiting-requests gauge from its Prometheus exposition."""

from __future__ import annotations

from kapell.backends.local.engine_load import gauge_sum

EXPOSITION = """\
# HELP vllm:num_requests_waiting Requests queued.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 3.0
vllm:num_requests_waiting{model_name="b"} 2.0
vllm:num_requests_waiting_total_fake 100.0
vllm:num_requests_running{model_name="a"} 7.0
"""


def test_gauge_sum_adds_every_sample_of_exactly_that_name() -> None:
    assert gauge_sum(EXPOSITION, "vllm:num_requests_waiting") == 5.0
    assert gauge_sum(EXPOSITION, "vllm:num_requests_running") == 7.0
    assert gauge_sum(EXPOSITION, "sglang:num_queue_reqs") == 0.0
