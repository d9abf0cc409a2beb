from __future__ import annotations

from kapell.gateway.demand import demand_sample, reported_demand
from kapell.gateway.metering import ModelUsage


def test_a_reported_demand_carries_the_same_fields_as_the_local_sample() -> None:
    usage = ModelUsage(requests=7, prompt_tokens=120, generated_tokens=80, in_flight=3,
                       queue_depth=2, admitted_tokens=260.0)  # fmt: skip
    reported = reported_demand(usage)
    local = demand_sample(usage, ready=1, engine_waiting=0)
    assert (reported.requests_total, reported.tokens_total, reported.admitted_tokens_total) == (
        local.requests_total, local.tokens_total, local.admitted_tokens_total,
    )  # fmt: skip
    assert (reported.in_flight, reported.queue_depth) == (3, 2)
    assert reported.tokens_total == 200
    assert reported.prompt_tokens_total == local.prompt_tokens_total == 120
