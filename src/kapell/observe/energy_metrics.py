"""Per-model energy on ``/metrics``: joules so far, per request and per 1k tokens.

The numbers come from the energy report (``policy.energy``), computed at scrape time from the
usage rows the platform supplies, and carry a ``source`` label saying modelled or measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily

from kapell.api import metrics as names


class EnergyFigures(Protocol):
    """What one report row must say (``policy.energy.EnergyRow`` does)."""

    @property
    def model(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def energy_j(self) -> float: ...
    @property
    def joules_per_request(self) -> float | None: ...
    @property
    def joules_per_1k_tokens(self) -> float | None: ...


class EnergyCollector:
    """A Prometheus collector over a function that returns the current report rows."""

    def __init__(self, rows: Callable[[], Sequence[EnergyFigures]]) -> None:
        self._rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["model", "source"]
        total = GaugeMetricFamily(names.MODEL_ENERGY_JOULES, "Energy used so far", labels=labels)
        per_request = GaugeMetricFamily(
            names.MODEL_JOULES_PER_REQUEST, "Energy per request", labels=labels
        )
        per_1k = GaugeMetricFamily(
            names.MODEL_JOULES_PER_1K_TOKENS, "Energy per 1,000 tokens", labels=labels
        )
        for row in self._rows():
            key = [row.model, row.source]
            total.add_metric(key, row.energy_j)
            if row.joules_per_request is not None:
                per_request.add_metric(key, row.joules_per_request)
            if row.joules_per_1k_tokens is not None:
                per_1k.add_metric(key, row.joules_per_1k_tokens)
        yield from (total, per_request, per_1k)
