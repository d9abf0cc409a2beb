"""Per prompt version metrics on the gateway's ``/metrics``: the canary next to the stable.

Every series is labelled ``prompt`` and ``version``, so a dashboard (or a person) can put the
two versions of a rollout side by side; the weights the rollout controller set are read at
scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kapell.api import metrics as names
from kapell.observe.gateway_metrics import LATENCY_BUCKETS_S

Weights = Callable[[], Iterable[tuple[str, int, int]]]
"""Yields ``(prompt, version, weight_percent)``."""


class _WeightCollector(Collector):
    def __init__(self) -> None:
        self.read: Weights = tuple

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            names.PROMPT_VERSION_WEIGHT,
            "Percent of the requests naming no version that this version gets",
            labels=["prompt", "version"],
        )
        for prompt, version, weight in self.read():
            family.add_metric([prompt, str(version)], weight)
        yield family


class PromptMetrics:
    """Requests, errors, latency, tokens and feedback per prompt version."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["prompt", "version"]
        self._requests = Counter(
            names.PROMPT_REQUESTS, "Requests answered", [*labels, "code"], registry=registry
        )
        self._errors = Counter(
            names.PROMPT_ERRORS,
            "Requests that failed for a reason other than the caller's key, quota or hang-up",
            labels,
            registry=registry,
        )
        self._duration = Histogram(
            names.PROMPT_DURATION_SECONDS,
            "Time to the last response byte",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._prompt_tokens = Counter(
            names.PROMPT_PROMPT_TOKENS, "Prompt tokens", labels, registry=registry
        )
        self._generated = Counter(
            names.PROMPT_GENERATED_TOKENS, "Generated tokens", labels, registry=registry
        )
        self._feedback = Counter(
            names.PROMPT_FEEDBACK,
            "Feedback scores posted (negative: below 0.5 of 1)",
            [*labels, "sentiment"],
            registry=registry,
        )
        self._weights = _WeightCollector()
        registry.register(self._weights)

    def watch_weights(self, read: Weights) -> None:
        """Read the version weights from ``read`` at every scrape."""
        self._weights.read = read

    def request(
        self,
        prompt: str,
        version: int,
        status: int,
        error: bool,
        latency_s: float,
        prompt_tokens: int,
        generated_tokens: int,
    ) -> None:
        labels = (prompt, str(version))
        self._requests.labels(*labels, str(status)).inc()
        if error:
            self._errors.labels(*labels).inc()
        self._duration.labels(*labels).observe(latency_s)
        self._prompt_tokens.labels(*labels).inc(prompt_tokens)
        self._generated.labels(*labels).inc(generated_tokens)

    def feedback(self, prompt: str, version: int, negative: bool) -> None:
        self._feedback.labels(prompt, str(version), "negative" if negative else "positive").inc()
