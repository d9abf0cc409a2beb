"""Budget decisions: GPU fractions, tenant attribution, periods and the refusal message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapell.api.kinds import BudgetLimits, BudgetSpec
from kapell.api.model import GPURequest
from kapell.policy.budget import (
    IDLE_TENANT,
    Spend,
    attribute,
    gpu_fraction,
    over_budget,
    period_key,
    remaining,
)


@pytest.mark.parametrize(
    ("gpu", "fraction"),
    [
        (None, 0.0),
        (GPURequest(count=2), 2.0),
        (GPURequest(mig_profile="3g.40gb"), 3 / 7),
        (GPURequest(mig_profile="1g.10gb"), 1 / 7),
        (GPURequest(milli=250), 0.25),
    ],
)
def test_gpu_fraction(gpu: GPURequest | None, fraction: float) -> None:
    assert gpu_fraction(gpu) == pytest.approx(fraction)


def test_period_keys_are_utc_day_and_month() -> None:
    t = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    assert period_key("day", t) == "2026-12-31"
    assert period_key("month", t) == "2026-12"
    assert period_key("day", t + 120) == "2027-01-01"


def test_attribution_splits_gpu_time_and_energy_by_token_share() -> None:
    split = attribute({"a": (30, 10), "b": (50, 10)}, gpu_seconds=10.0, joules=3.6e6, g_per_kwh=400)
    assert split["a"] == Spend(30, 10, 4.0, 1.44e6, pytest.approx(160.0))
    assert split["b"].gpu_seconds == pytest.approx(6.0)
    assert split["b"].grams_co2 == pytest.approx(240.0)


def test_an_idle_interval_is_charged_to_the_idle_tenant() -> None:
    assert attribute({}, 5.0, 100.0, 0.0) == {IDLE_TENANT: Spend(0, 0, 5.0, 100.0, 0.0)}


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=3),
        st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
        max_size=5,
    ),
    st.floats(0, 1e6),
    st.floats(0, 1e9),
)
def test_attribution_conserves_what_was_used(
    tokens: dict[str, tuple[int, int]], gpu_s: float, joules: float
) -> None:
    split = attribute(tokens, gpu_s, joules, 100.0)
    total = sum(split.values(), Spend())
    assert total.tokens == sum(i + o for i, o in tokens.values())
    assert total.gpu_seconds == pytest.approx(gpu_s)
    assert total.joules == pytest.approx(joules)


def test_over_budget_at_the_cap_names_what_ran_out() -> None:
    budget = BudgetSpec(period="day", limits=BudgetLimits(tokens=1000, joules=50.0))
    assert over_budget("team-a", budget, Spend(400, 599, 0, 10, 0)) is None
    message = over_budget("team-a", budget, Spend(400, 600, 0, 10, 0))
    assert message is not None
    assert message.startswith("namespace 'team-a' is over its daily budget: 1000 of 1000 tokens")
    assert "joules" not in message
    both = over_budget("team-a", budget, Spend(400, 600, 0, 60, 0))
    assert both is not None and "60 of 50 joules" in both


def test_remaining_lists_only_capped_quantities_and_never_goes_negative() -> None:
    limits = BudgetLimits(gpu_seconds=100.0, grams_co2=2.0)
    assert remaining(limits, Spend(gpu_seconds=30.0, grams_co2=5.0)) == {
        "gpu_seconds": 70.0,
        "grams_co2": 0.0,
    }
