"""Demand for each Model summed over the gateway replicas that meter it (the operator's side).

Counters are summed as Prometheus sums rates: each replica's increments since its previous
report are added to a per-Model total, and a counter that went down (a restarted replica)
counts from zero again, so totals never go backwards. Gauges (requests in flight and queued)
are summed over replicas heard from within ``stale_after_s``: a replica that died stops
counting instead of holding its last queue forever.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kapell.api.demand import DemandReport, ModelDemand
from kapell.policy.autoscale import DemandSample

STALE_AFTER_S = 5.0
"""A replica reports every second; five missed reports mean it is gone."""


@dataclass
class _Totals:
    requests: float = 0.0
    tokens: float = 0.0
    admitted_tokens: float = 0.0
    prompt_tokens: float = 0.0


@dataclass
class _Replica:
    heard_s: float
    models: dict[str, ModelDemand] = field(default_factory=dict)


def _increment(new: float, old: float) -> float:
    return new - old if new >= old else new


class DemandBoard:
    """Thread-safe: reports arrive on the API server's loop, samples are read by reconciles."""

    def __init__(self, stale_after_s: float = STALE_AFTER_S) -> None:
        self._stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._replicas: dict[str, _Replica] = {}
        self._totals: dict[str, _Totals] = {}

    def record(self, report: DemandReport, now_s: float) -> None:
        with self._lock:
            replica = self._replicas.setdefault(report.gateway, _Replica(now_s))
            replica.heard_s = now_s
            for model, demand in report.models.items():
                before = replica.models.get(model, ModelDemand())
                totals = self._totals.setdefault(model, _Totals())
                totals.requests += _increment(demand.requests_total, before.requests_total)
                totals.tokens += _increment(demand.tokens_total, before.tokens_total)
                totals.admitted_tokens += _increment(
                    demand.admitted_tokens_total, before.admitted_tokens_total
                )
                totals.prompt_tokens += _increment(
                    demand.prompt_tokens_total, before.prompt_tokens_total
                )
                replica.models[model] = demand
            for gone in [g for g, r in self._replicas.items() if self._stale(r, now_s)]:
                del self._replicas[gone]

    def _stale(self, replica: _Replica, now_s: float) -> bool:
        return now_s - replica.heard_s > self._stale_after_s

    def sample(self, model: str, ready_replicas: int, now_s: float) -> DemandSample:
        """The autoscaler's view of ``model`` (``namespace/name``) at ``now_s``."""
        with self._lock:
            totals = self._totals.get(model, _Totals())
            current = [
                r.models[model]
                for r in self._replicas.values()
                if model in r.models and not self._stale(r, now_s)
            ]
            return DemandSample(
                tokens_total=totals.tokens,
                requests_total=totals.requests,
                in_flight=sum(d.in_flight for d in current),
                queue_depth=sum(d.queue_depth for d in current),
                ready_replicas=ready_replicas,
                admitted_tokens_total=totals.admitted_tokens,
                prompt_tokens_total=totals.prompt_tokens,
            )

    def gateways(self, now_s: float) -> int:
        """Gateway replicas heard from recently."""
        with self._lock:
            return sum(not self._stale(r, now_s) for r in self._replicas.values())
