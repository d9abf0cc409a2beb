"""The autoscaler's view of a model's demand, built in one place from the gateway's meter.

``kapell up`` and the serving twin both call ``demand_sample``, so the policy sees the same
fields in production and in a replay: completion and admission token counters, requests in
flight and queued in the activator, ready replicas, and requests waiting inside the engines
(their ``vllm:num_requests_waiting``, summed over the model's replicas).
"""

from __future__ import annotations

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
    )
