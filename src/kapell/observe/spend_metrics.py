"""Accounted spend and budget state on ``/metrics``: the numbers ``kapell spend`` prints.

Gauges, not counters: they are the period's totals read from the ledger at scrape time, and
start again at zero when a new UTC day or month begins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from kapell.api import metrics as names

_FIELDS = (
    ("tokensIn", names.SPEND_TOKENS_IN, "Prompt tokens accounted this period"),
    ("tokensOut", names.SPEND_TOKENS_OUT, "Generated tokens accounted this period"),
    ("gpuSeconds", names.SPEND_GPU_SECONDS, "GPU-seconds by fraction accounted this period"),
    ("joules", names.SPEND_JOULES, "Energy accounted this period"),
    ("gramsCo2", names.SPEND_GRAMS_CO2, "gCO2eq accounted this period"),
)


class SpendCollector:
    """Collects over a function returning the spend report (the admin API's ``/spend``)."""

    def __init__(self, report: Callable[[], Mapping[str, Any]]) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self._report()
        labels = ["namespace", "tenant", "period", "source"]
        families = [GaugeMetricFamily(n, h, labels=labels) for _, n, h in _FIELDS]
        rows: Sequence[Mapping[str, Any]] = report["rows"]
        for row in rows:
            key = [row["namespace"], row["tenant"], row["period"], row["energySource"]]
            for (field, _, _), family in zip(_FIELDS, families, strict=True):
                family.add_metric(key, float(row[field]))
        over = GaugeMetricFamily(
            names.BUDGET_OVER,
            "1 while the namespace's Budget refuses new work",
            labels=["namespace", "budget"],
        )
        for budget in report["budgets"]:
            over.add_metric([budget["namespace"], budget["name"]], float(bool(budget["refusal"])))
        yield from (*families, over)
