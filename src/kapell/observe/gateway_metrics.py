"""The gateway's Prometheus metrics, in a registry of their own.

Counters and histograms are labelled by model and tenant and updated once per request
(labelled children are cached, so the hot path does no label lookup). Gauges that already live
elsewhere (queue depth, in-flight, ready replicas) are read at scrape time through callbacks,
never copied on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kapell.api import metrics as names

LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

ENERGY_BUCKETS_J = (1.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5)

ModelGauges = Callable[[], Iterable[tuple[str, int, int, int, int]]]
"""Yields ``(model, queue_depth, in_flight, replicas_ready, replicas_desired)``."""


class _GaugeCollector(Collector):
    def __init__(self, read: ModelGauges) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [
            GaugeMetricFamily(names.GATEWAY_QUEUE_DEPTH, "Requests waiting", labels=["model"]),
            GaugeMetricFamily(names.GATEWAY_IN_FLIGHT, "Requests upstream", labels=["model"]),
            GaugeMetricFamily(names.GATEWAY_REPLICAS_READY, "Ready replicas", labels=["model"]),
            GaugeMetricFamily(
                names.GATEWAY_REPLICAS_DESIRED, "Replicas the autoscaler wants", labels=["model"]
            ),
        ]
        for model, *values in self._read():
            for family, value in zip(families, values, strict=True):
                family.add_metric([model], value)
        yield from families


class RequestMetrics:
    """The labelled children for one (model, tenant) pair."""

    def __init__(self, children: dict[str, Any]) -> None:
        self.ttft_s = children["ttft"]
        self.e2e_s = children["e2e"]
        self.prompt_tokens = children["prompt"]
        self.generated_tokens = children["generated"]
        self.energy_j = children["energy"]
        self._requests = children["requests"]
        self.retries = children["retries"]
        """Requests sent to another replica after one failed before answering."""
        self._by_code: dict[int, Any] = {}

    def count(self, status: int) -> None:
        child = self._by_code.get(status)
        if child is None:
            child = self._by_code[status] = self._requests(str(status))
        child.inc()


class GatewayMetrics:
    """Everything ``/metrics`` shows for one gateway."""

    def __init__(self, gauges: ModelGauges) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "tenant"]
        self._requests = Counter(
            names.GATEWAY_REQUESTS, "Requests answered", [*labels, "code"], registry=self.registry
        )
        self._prompt = Counter(
            names.GATEWAY_PROMPT_TOKENS, "Prompt tokens", labels, registry=self.registry
        )
        self._generated = Counter(
            names.GATEWAY_GENERATED_TOKENS, "Generated tokens", labels, registry=self.registry
        )
        self._retries = Counter(
            names.GATEWAY_UPSTREAM_RETRIES,
            "Requests retried on another replica after one failed before answering",
            labels,
            registry=self.registry,
        )
        self._ttft = Histogram(
            names.GATEWAY_TTFT_SECONDS,
            "Time to the first response byte",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._e2e = Histogram(
            names.GATEWAY_E2E_SECONDS,
            "Time to the last response byte",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._energy = Histogram(
            names.GATEWAY_REQUEST_ENERGY_JOULES,
            "Energy charged to a request: its token share of its replica's power while in flight",
            [*labels, "source"],
            buckets=ENERGY_BUCKETS_J,
            registry=self.registry,
        )
        self.registry.register(_GaugeCollector(gauges))
        self._children: dict[tuple[str, str], RequestMetrics] = {}

    def for_request(self, model: str, tenant: str) -> RequestMetrics:
        """The cached metric children for ``model`` and ``tenant``."""
        key = (model, tenant)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = RequestMetrics(
                {
                    "ttft": self._ttft.labels(model, tenant),
                    "e2e": self._e2e.labels(model, tenant),
                    "prompt": self._prompt.labels(model, tenant),
                    "generated": self._generated.labels(model, tenant),
                    "energy": self._energy.labels(model, tenant, "modelled"),
                    "requests": lambda code: self._requests.labels(model, tenant, code),
                    "retries": self._retries.labels(model, tenant),
                }
            )
        return found

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
