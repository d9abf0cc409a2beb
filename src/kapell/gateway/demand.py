"""The autoscaler's view of a model's demand, built in one place from the gateway's meter.

``kapell up`` and the serving twin both call ``demand_sample``, so the policy sees the same
fields in production and in a replay: completion and admission token counters, requests in
flight and queued in the activator, ready replicas, and requests waiting inside the engines
(their ``vllm:num_requests_waiting``, summed over the model's replicas).
"""

from __future__ import annotations

from kapell.api.demand import ModelDemand
from kapell.gateway.metering import ModelUsage
from kapell.policy.autoscale import DemandSample


def demand_sample(usage: ModelUsage, ready: int, engine_waiting: int) -> DemandSample:
    """The ``DemandSample`` of one model now."""
    return DemandSample(
        tokens_total=float(usage.tokens),
        requests_total=float(usage.requests),
        in_flight=usage.in_flight,
        queue_depth=usage.queue_depth,
        ready_replicas=ready,
        engine_waiting=engine_waiting,
        admitted_tokens_total=usage.admitted_tokens,
        prompt_tokens_total=float(usage.prompt_tokens),
    )


def reported_demand(usage: ModelUsage) -> ModelDemand:
    """What a gateway replica on a cluster reports to the operator for one model: the fields of
    ``demand_sample`` the gateway knows (the operator adds its ready replicas)."""
    sample = demand_sample(usage, ready=0, engine_waiting=0)
    return ModelDemand(
        requests_total=sample.requests_total,
        tokens_total=sample.tokens_total,
        admitted_tokens_total=sample.admitted_tokens_total or 0.0,
        prompt_tokens_total=sample.prompt_tokens_total,
        in_flight=sample.in_flight,
        queue_depth=sample.queue_depth,
    )
