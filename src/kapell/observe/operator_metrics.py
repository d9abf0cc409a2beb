"""The operator's own metrics: how long reconciles take and how many API writes they cost.

Served on ``kapell operator --port``'s ``/metrics`` next to the process metrics prometheus-client
always exports (``process_resident_memory_bytes`` ...), which ``kapell bench operator`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from kapell.api import metrics

RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Writes:
    """A counter read from the backends' own tallies at scrape time."""

    def __init__(self, writes: Callable[[], int]) -> None:
        self._writes = writes

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            metrics.OPERATOR_API_WRITES, "Writes the operator sent to the Kubernetes API."
        )
        family.add_metric([], float(self._writes()))
        yield family


class OperatorMetrics:
    """A registry of its own, so several operators in one test process never collide."""

    def __init__(self, writes: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.reconcile = Histogram(
            metrics.OPERATOR_RECONCILE_SECONDS,
            "Time one reconcile of one Model took.",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Writes(writes))
        ProcessCollector(registry=self.registry)

    def observe(self, seconds: float) -> None:
        self.reconcile.observe(seconds)
