"""Drift statistics on ``/metrics``: the numbers ``kapell drift`` prints.

Read at scrape time from the gateway's drift report (``gateway.drift.DriftMonitor.report``).
A key's PSI and threshold appear once its first current window has been compared; an alert
rule compares the two (``deploy/prometheus/kapell-drift-rules.yaml``). Latency drifts only when
its shift also passes an effect floor (``policy.drift``), so its alert reads the policy's
decision, ``kapell_drift_drifting``, and reports the shift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kapell.api import metrics as names

_KEY = ["model", "prompt", "version"]


class DriftCollector:
    """Collects over a function returning the drift report (the admin API's ``/drift``)."""

    def __init__(self, report: Callable[[], Mapping[str, Any]]) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        report = self._report()
        feature_labels = [*_KEY, "feature", "direction"]
        psi = GaugeMetricFamily(
            names.DRIFT_PSI,
            "Population-stability index of the last current window against the reference",
            labels=feature_labels,
        )
        limit = GaugeMetricFamily(
            names.DRIFT_PSI_THRESHOLD,
            "PSI above which the feature drifts (false-alarm rate per window: "
            f"{names.DRIFT_FALSE_ALARM_RATE})",
            labels=feature_labels,
        )
        shift = GaugeMetricFamily(
            names.DRIFT_SHIFT_RATIO,
            "Current over reference of the median or p90, whichever moved more (numeric features)",
            labels=feature_labels,
        )
        drifting = GaugeMetricFamily(
            names.DRIFT_DRIFTING,
            "1 when the feature drifts (above its threshold, and past the effect floor where "
            "it has one), else 0",
            labels=feature_labels,
        )
        sizes = GaugeMetricFamily(
            names.DRIFT_WINDOW_REQUESTS,
            "Requests in the reference and in the filling current window",
            labels=[*_KEY, "window"],
        )
        compared = CounterMetricFamily(
            names.DRIFT_WINDOWS_COMPARED.removesuffix("_total"),
            "Current windows compared with the reference",
            labels=_KEY,
        )
        for key in report["keys"]:
            ids = [key["model"], key["prompt"], key["version"]]
            sizes.add_metric([*ids, "reference"], key["referenceRequests"])
            sizes.add_metric([*ids, "current"], key["currentRequests"])
            compared.add_metric(ids, key["windowsCompared"])
            for f in key["features"]:
                labels = [*ids, f["feature"], f["direction"]]
                psi.add_metric(labels, f["statistic"])
                limit.add_metric(labels, f["threshold"])
                drifting.add_metric(labels, float(f["drifting"]))
                if f["shift"] is not None:
                    shift.add_metric(labels, f["shift"])
        alpha = GaugeMetricFamily(
            names.DRIFT_FALSE_ALARM_RATE,
            "Stated share of stationary windows on which one feature's PSI passes its threshold",
            value=report["settings"]["falseAlarmRate"],
        )
        yield from (psi, limit, shift, drifting, sizes, compared, alpha)
