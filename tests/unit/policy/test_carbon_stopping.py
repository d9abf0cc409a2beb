"""Optimal stopping on past forecast errors: no peeking, sane limits, deadlines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.api.errors import KapellError
from kapell.policy.carbon.forecast import SeasonalRidge
from kapell.policy.carbon.series import HourlySeries
from kapell.policy.carbon.simulate import simulate_shifting
from kapell.policy.carbon.stopping import block_error_stats, start_now


def _daily(days: int, seed: int, noise: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    return 250 + 100 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, noise, len(hours))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), cut=st.integers(1, 299), job_h=st.integers(1, 6))
def test_error_stats_use_only_forecasts_whose_targets_are_past(
    seed: int, cut: int, job_h: int
) -> None:
    rng = np.random.default_rng(seed)
    values = _daily(13, seed)
    forecast = values[:, None] + rng.normal(0, 20, (len(values), 12))  # any forecast matrix
    changed_values, changed_forecast = values.copy(), forecast.copy()
    changed_values[cut:] = rng.uniform(0, 1000, len(values) - cut)
    # row t of a forecast is made from hours < t, so new values from `cut` move rows after it
    changed_forecast[cut + 1 :] = rng.uniform(0, 1000, changed_forecast[cut + 1 :].shape)
    before = block_error_stats(values, forecast, job_h, 7, window_h=48)
    after = block_error_stats(changed_values, changed_forecast, job_h, 7, window_h=48)
    np.testing.assert_array_equal(before.mean[: cut + 1], after.mean[: cut + 1])
    np.testing.assert_array_equal(before.var[: cut + 1], after.var[: cut + 1])


def test_error_stats_find_a_known_bias_and_spread() -> None:
    values = np.full(600, 100.0)
    noise = np.random.default_rng(0).normal(0, 10, (600, 4))
    stats = block_error_stats(values, values[:, None] + 5.0 + noise, 1, 4, window_h=200)
    assert stats.mean[500] == pytest.approx([5.0] * 4, abs=2.0)
    assert np.sqrt(stats.var[500]) == pytest.approx([10.0] * 4, rel=0.2)


@given(costs=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=25))
def test_without_uncertainty_it_starts_exactly_when_now_is_cheapest(costs: list[float]) -> None:
    c = np.array(costs)
    zeros = np.zeros(len(c))
    assert start_now(c, zeros, zeros) == (c[0] <= c[1:].min(initial=np.inf))


def test_uncertain_later_hours_make_waiting_worth_more() -> None:
    costs = np.array([100.0, 110.0, 110.0, 110.0])
    zeros = np.zeros(4)
    assert start_now(costs, zeros, zeros)
    assert not start_now(costs, np.array([0.0, 400.0, 400.0, 400.0]), zeros)


@pytest.mark.parametrize("pausable", [False, True])
def test_stopping_meets_every_deadline_and_is_bounded_by_the_oracle(pausable: bool) -> None:
    series = [HourlySeries("a", 0, _daily(21, 5)), HourlySeries("b", 0, _daily(21, 6))]
    result = simulate_shifting(series, 3, 24, SeasonalRidge(), pausable, decision="stopping")
    assert result.deadlines_met == result.runs
    assert result.forecast >= result.oracle - 1e-6


def test_unknown_decision_rule_is_a_user_error() -> None:
    with pytest.raises(KapellError, match="stopping"):
        simulate_shifting([HourlySeries("a", 0, _daily(3, 1))], 1, 4, SeasonalRidge(), decision="x")
