"""Spend and budgets: what a unit of work costs, who is charged, and whether a namespace is over.

Pure: the caller passes the spend it has accounted and the time; nothing here reads a clock or
a store. Spend is tokens in and out, GPU-seconds by fraction, joules and grams of CO2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from kapell.api.kinds import BudgetLimits, BudgetSpec
from kapell.api.model import GPURequest
from kapell.policy.energy import carbon_g

IDLE_TENANT = "-"
"""Who is charged for GPU time and energy while a model serves no request."""


@dataclass(frozen=True)
class Spend:
    """What was used; every field adds up (``+``)."""

    tokens_in: int = 0
    tokens_out: int = 0
    gpu_seconds: float = 0.0
    joules: float = 0.0
    grams_co2: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


def gpu_fraction(gpu: GPURequest | None) -> float:
    """How much of a GPU one replica holds: whole GPUs, a MIG slice by its compute slices out
    of 7 (3g.40gb is 3/7), a milli-GPU share by its thousandths."""
    if gpu is None:
        return 0.0
    if gpu.mig_profile is not None:
        return int(gpu.mig_profile.split("g.", 1)[0]) / 7
    if gpu.milli is not None:
        return gpu.milli / 1000
    return float(gpu.count)


def period_key(period: str, now_s: float) -> str:
    """The UTC day (``2026-12-02``) or month (``2026-12``) that ``now_s`` falls in."""
    stamp = datetime.fromtimestamp(now_s, UTC)
    return stamp.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def attribute(
    tokens: Mapping[str, tuple[int, int]], gpu_seconds: float, joules: float, g_per_kwh: float
) -> dict[str, Spend]:
    """One model's spend over one accounting interval, split among tenants.

    ``tokens`` is each tenant's (in, out) tokens in the interval. GPU-seconds and joules are
    shared by each tenant's share of the tokens; with no token served they go to
    ``IDLE_TENANT`` (a replica kept warm is the namespace's cost, not a tenant's).
    """
    total = sum(i + o for i, o in tokens.values())
    shares = (
        {tenant: (i + o) / total for tenant, (i, o) in tokens.items()}
        if total
        else {IDLE_TENANT: 1.0}
    )
    out: dict[str, Spend] = {}
    for tenant, share in shares.items():
        used_in, used_out = tokens.get(tenant, (0, 0))
        tenant_j = joules * share
        out[tenant] = Spend(
            used_in,
            used_out,
            gpu_seconds * share,
            tenant_j,
            carbon_g(tenant_j, g_per_kwh),
        )
    return out


_ADJECTIVE = {"day": "daily", "month": "monthly"}
_LIMITS = (
    ("tokens", "tokens", "{:.0f}"),
    ("gpu_seconds", "GPU-seconds", "{:.1f}"),
    ("joules", "joules", "{:.0f}"),
    ("grams_co2", "gCO2", "{:.2f}"),
)


def _used(spend: Spend, field: str) -> float:
    return float(spend.tokens if field == "tokens" else getattr(spend, field))


def remaining(limits: BudgetLimits, spend: Spend) -> dict[str, float]:
    """What is left of each capped quantity (0 when used up; uncapped ones are absent)."""
    left = {}
    for field, _, _ in _LIMITS:
        cap = getattr(limits, field)
        if cap is not None:
            left[field] = max(0.0, cap - _used(spend, field))
    return left


def over_budget(namespace: str, budget: BudgetSpec, spend: Spend) -> str | None:
    """Why new work in ``namespace`` is refused, or None while every cap has room.

    A cap is reached when the period's spend is at or above it: work already running is not
    stopped, so spend may end a little above the cap.
    """
    reached = []
    for field, label, number in _LIMITS:
        cap = getattr(budget.limits, field)
        if cap is not None and _used(spend, field) >= cap:
            used = number.format(_used(spend, field))
            reached.append(f"{used} of {number.format(cap)} {label}")
    if not reached:
        return None
    return (
        f"namespace {namespace!r} is over its {_ADJECTIVE[budget.period]} budget: "
        f"{', '.join(reached)} used this {budget.period} (UTC); new work is refused until the "
        f"next {budget.period} or a raised Budget"
    )
