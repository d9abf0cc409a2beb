"""Every request through the gateway is charged joules, exported on ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Stack
from kapell.api import metrics as names
from kapell.gateway.metering import busy_power_w


def _energy_samples(text: str) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == names.GATEWAY_REQUEST_ENERGY_JOULES:
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    assert sample.labels["source"] == "modelled"
                    found[sample.name.rsplit("_", 1)[1]] = sample.value
    return found


def test_overlapping_requests_share_the_replicas_power(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.set_endpoints("tiny", [stack.add_engine("a", token_delay_s=0.05)])
    api = openai.OpenAI(base_url=stack.url + "/v1", api_key="none", max_retries=0)

    def ask(_: int) -> None:
        api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(ask, range(8)))
    usage = stack.loop_thread.call(lambda: stack.gateway.meter.snapshot("tiny"))
    model = stack.loop_thread.call(lambda: stack.source.model("tiny"))
    assert model is not None
    power_w = busy_power_w(model)
    assert power_w is not None and power_w > 0
    exported = _energy_samples(httpx.get(stack.url + "/metrics").text)
    assert exported["count"] == 8
    assert exported["sum"] == pytest.approx(usage.request_energy_j)
    # The charges add up to the replica's power over the time it had requests in flight
    # (the gateway's busy clock starts a moment before the upstream call: a few % of slack).
    assert usage.request_energy_j == pytest.approx(power_w * usage.busy_seconds(0.0), rel=0.1)
