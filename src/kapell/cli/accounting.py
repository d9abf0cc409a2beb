"""Spend accounting for ``kapell up``: meter readings into the ledger, budgets into refusals.

Every tick reads what grew since the last one (tenant tokens from the gateway's ``Meter``,
each Model's GPU-seconds and joules from the usage rows and the energy report), splits it
among tenants (``policy.budget.attribute``), adds it to the SQLite ledger in one transaction,
then asks ``policy.budget.over_budget`` for every Budget. The gateway and the Model controller
read the cached verdicts, so a request costs a dict lookup, not a query.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from kapell.api import Budget, KapellError, Model
from kapell.backends.local.spend import Charge, SpendLedger, SpendRow
from kapell.backends.local.store import SQLiteStore
from kapell.observe.carbon_sources import read_intensity_csv
from kapell.policy.budget import attribute, gpu_fraction, over_budget, period_key, remaining
from kapell.policy.energy import EnergyRow

ACCOUNT_EVERY_S = 1.0


class Accountant:
    """Turns cumulative in-process readings into persisted spend and budget verdicts."""

    def __init__(
        self,
        store: SQLiteStore,
        ledger: SpendLedger,
        tenant_tokens: Callable[[], dict[tuple[str, str], tuple[int, int]]],
        replica_seconds: Callable[[str], float],
        energy: Callable[[], Sequence[EnergyRow]],
        intensity: Callable[[float], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._tenant_tokens = tenant_tokens
        self._replica_seconds = replica_seconds
        self._energy = energy
        self._intensity = intensity
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        self._refusals: dict[str, str] = {}

    def _grown(self, key: tuple[str, str], cumulative: float) -> float:
        """How much ``cumulative`` grew since the last tick (a reading that restarted from
        zero, as when a Model is re-created, counts from zero)."""
        before = self._seen.get(key, 0.0)
        self._seen[key] = cumulative
        return cumulative - before if cumulative >= before else cumulative

    def tick(self) -> None:
        """Account what was used since the last tick, then refresh the budget verdicts."""
        now_s = self._clock()
        day = period_key("day", now_s)
        g_per_kwh = self._intensity(now_s)
        energy = {row.model: row for row in self._energy()}
        tokens = self._tenant_tokens()
        charges = []
        for model in self._store.resources("Model"):
            assert isinstance(model, Model)
            name = model.metadata.name
            grown = {
                tenant: (
                    int(self._grown(("in", f"{name}/{tenant}"), used_in)),
                    int(self._grown(("out", f"{name}/{tenant}"), used_out)),
                )
                for (model_name, tenant), (used_in, used_out) in tokens.items()
                if model_name == name
            }
            served = {t: used for t, used in grown.items() if sum(used)}
            gpu_s = self._grown(("gpu", name), self._replica_seconds(model.key))
            gpu_s *= gpu_fraction(model.spec.resources.gpu)
            row = energy.get(name)
            joules = self._grown(("joules", name), row.energy_j) if row is not None else 0.0
            source = row.source if row is not None else "modelled"
            if not served and gpu_s == 0 and joules == 0:
                continue
            for tenant, spend in attribute(served, gpu_s, joules, g_per_kwh).items():
                charges.append(Charge(day, model.metadata.namespace, tenant, name, spend, source))
        if charges:
            self._ledger.add(charges)
        self.refresh(now_s)

    def refresh(self, now_s: float | None = None) -> None:
        """Recompute which namespaces are over a Budget from the persisted spend."""
        now_s = self._clock() if now_s is None else now_s
        refusals: dict[str, str] = {}
        for budget in self._store.resources("Budget"):
            assert isinstance(budget, Budget)
            namespace = budget.metadata.namespace
            spend = self._ledger.namespace_total(period_key(budget.spec.period, now_s), namespace)
            refusal = over_budget(namespace, budget.spec, spend)
            if refusal is not None and namespace not in refusals:
                refusals[namespace] = refusal
        self._refusals = refusals

    def over_budget(self, namespace: str) -> str | None:
        """Why new work in ``namespace`` is refused, as of the last tick (None: admit)."""
        return self._refusals.get(namespace)

    def report(self, namespace: str | None = None) -> dict[str, Any]:
        """Spend per namespace and tenant today and this month, and every Budget against it:
        the admin API's ``/spend``, ``kapell spend`` and ``/metrics`` all show this."""
        now_s = self._clock()
        day, month = period_key("day", now_s), period_key("month", now_s)
        rows = [
            _row(period, found)
            for period, key in (("day", day), ("month", month))
            for found in self._ledger.totals(key, namespace)
        ]
        budgets = []
        for budget in self._store.resources("Budget"):
            assert isinstance(budget, Budget)
            ns = budget.metadata.namespace
            if namespace is not None and ns != namespace:
                continue
            spend = self._ledger.namespace_total(period_key(budget.spec.period, now_s), ns)
            budgets.append({
                "namespace": ns,
                "name": budget.metadata.name,
                "period": budget.spec.period,
                "limits": budget.spec.limits.model_dump(by_alias=True, exclude_none=True),
                "remaining": {
                    to_camel(k): v for k, v in remaining(budget.spec.limits, spend).items()
                },
                "refusal": over_budget(ns, budget.spec, spend),
            })  # fmt: skip
        return {"day": day, "month": month, "rows": rows, "budgets": budgets}

    async def run(self, every_s: float = ACCOUNT_EVERY_S) -> None:
        """Tick until cancelled; a last tick on the way out keeps the final interval."""
        try:
            while True:
                await asyncio.sleep(every_s)
                self.tick()
        finally:
            with contextlib.suppress(Exception):
                self.tick()


def intensity_source(option: str | None) -> Callable[[float], float]:
    """gCO2eq/kWh at a time, from ``--carbon-intensity``: a number (constant), or an intensity
    CSV (``observe.carbon_sources`` formats) read for its reading nearest in time; none: 0."""
    if option is None:
        return lambda now_s: 0.0
    with contextlib.suppress(ValueError):
        constant = float(option)
        if constant < 0:
            raise KapellError(f"--carbon-intensity must be at least 0 gCO2/kWh, got {option}")
        return lambda now_s: constant
    readings = read_intensity_csv(Path(option))
    if not readings.times_s:
        raise KapellError(f"{option}: no carbon-intensity readings")
    times = readings.times_s

    def nearest(now_s: float) -> float:
        index = bisect.bisect_left(times, now_s)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(times)]
        best = min(candidates, key=lambda i: abs(times[i] - now_s))
        return readings.g_per_kwh[best]

    return nearest


def _row(period: str, found: SpendRow) -> dict[str, Any]:
    spend = asdict(found.spend)
    return {
        "namespace": found.namespace,
        "tenant": found.tenant,
        "period": period,
        "tokensIn": spend["tokens_in"],
        "tokensOut": spend["tokens_out"],
        "gpuSeconds": spend["gpu_seconds"],
        "joules": spend["joules"],
        "gramsCo2": spend["grams_co2"],
        "energySource": found.energy_source,
    }
