"""The engine's Prometheus metrics, under vLLM's names (spelled in :mod:`kapell.api.metrics`).

Request counters and latency histograms are fed by the HTTP layer as it streams; the running and
waiting gauges and the KV-cache use are read from the backend at each scrape, so they are never
stale. Every series carries vLLM's ``model_name`` label.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kapell.api import metrics as names
from kapell.engines.openai_server.protocol import EngineStats

_LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0)
_LONG_BUCKETS_S = (*_LATENCY_BUCKETS_S, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0)


class EngineMetrics:
    """One engine's metrics in ``registry``, labelled with the served model name."""

    def __init__(
        self, registry: CollectorRegistry, model_name: str, stats: Callable[[], EngineStats]
    ) -> None:
        label = ("model_name",)
        self.prompt_tokens = Counter(
            names.ENGINE_PROMPT_TOKENS, "Prompt tokens processed.", label, registry=registry
        ).labels(model_name)
        self.generation_tokens = Counter(
            names.ENGINE_GENERATION_TOKENS, "Tokens generated.", label, registry=registry
        ).labels(model_name)
        self._success = Counter(
            names.ENGINE_REQUEST_SUCCESS,
            "Requests finished, by finish reason.",
            (*label, "finished_reason"),
            registry=registry,
        )
        self._model_name = model_name
        self.ttft_s = Histogram(
            names.ENGINE_TTFT_SECONDS,
            "Time to first token.",
            label,
            buckets=_LONG_BUCKETS_S,
            registry=registry,
        ).labels(model_name)
        self.tpot_s = Histogram(
            names.ENGINE_TPOT_SECONDS,
            "Time per output token after the first.",
            label,
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        ).labels(model_name)
        self.e2e_s = Histogram(
            names.ENGINE_E2E_SECONDS,
            "Request latency from arrival to last token.",
            label,
            buckets=_LONG_BUCKETS_S,
            registry=registry,
        ).labels(model_name)
        running = Gauge(
            names.ENGINE_REQUESTS_RUNNING, "Requests being generated.", label, registry=registry
        )
        waiting = Gauge(names.ENGINE_REQUESTS_WAITING, "Requests queued.", label, registry=registry)
        kv_usage = Gauge(
            names.ENGINE_KV_CACHE_USAGE, "KV-cache use, 0..1.", label, registry=registry
        )
        running.labels(model_name).set_function(lambda: stats().num_running)
        waiting.labels(model_name).set_function(lambda: stats().num_waiting)
        kv_usage.labels(model_name).set_function(lambda: stats().kv_cache_usage)

    def request_finished(self, finished_reason: str) -> None:
        self._success.labels(self._model_name, finished_reason).inc()
