"""Forecasts see only the past, and the ridge one learns a daily cycle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.api.errors import KapellError
from kapell.policy.carbon.forecast import (
    FORECASTERS,
    SeasonalNaive,
    SeasonalRidge,
    forecaster_named,
    predict,
)
from kapell.policy.carbon.series import HourlySeries
from kapell.policy.carbon.simulate import simulate_shifting

HONEST = [f for name, f in FORECASTERS.items() if name != "perfect"]


def _daily(days: int, seed: int, noise: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    return 250 + 100 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, noise, len(hours))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), cut=st.integers(1, 599), forecaster=st.sampled_from(HONEST))
def test_no_forecast_row_depends_on_its_own_hour_or_later(
    seed: int, cut: int, forecaster: SeasonalNaive | SeasonalRidge
) -> None:
    values = _daily(25, seed)
    changed = values.copy()
    changed[cut:] = np.random.default_rng(seed + 1).uniform(0, 1000, len(values) - cut)
    before = forecaster.matrix(values, 30)
    after = forecaster.matrix(changed, 30)
    np.testing.assert_array_equal(before[: cut + 1], after[: cut + 1])


def test_predict_is_the_matrix_row_after_the_history() -> None:
    values = _daily(20, 3)
    ridge = SeasonalRidge()
    np.testing.assert_allclose(predict(ridge, values[:400], 12), ridge.matrix(values, 12)[400])


def test_seasonal_naive_repeats_yesterday() -> None:
    values = _daily(3, 0, noise=0.0)
    np.testing.assert_allclose(SeasonalNaive().matrix(values, 24)[48], values[24:48])


def test_ridge_beats_naive_when_level_shifts_persist() -> None:
    rng = np.random.default_rng(7)
    days = 60
    cycle = _daily(days, 1, noise=3.0)
    # weather-like regimes: a level that persists for about a day and a half, then changes
    level = np.repeat(rng.normal(0, 80, days * 24 // 36 + 1), 36)[: days * 24]
    values = cycle + level
    start = 24 * 20
    errors = {}
    for f in (SeasonalNaive(), SeasonalRidge()):
        pred = f.matrix(values, 6)[start:-6]
        truth = np.stack([values[start + k : len(values) - 6 + k] for k in range(6)], axis=1)
        errors[f.name] = float(np.mean(np.abs(pred - truth)))
    assert errors["seasonal-ridge"] < 0.8 * errors["seasonal-naive"]


def test_unknown_forecast_is_a_user_error() -> None:
    with pytest.raises(KapellError, match="seasonal-ridge"):
        forecaster_named("crystal-ball")


def test_perfect_forecast_reaches_the_oracle_and_honest_ones_stay_below() -> None:
    series = [HourlySeries("a", 0, _daily(14, 5, noise=40.0))]
    for pausable in (False, True):
        perfect = simulate_shifting(series, 3, 24, FORECASTERS["perfect"], pausable)
        assert perfect.forecast == pytest.approx(perfect.oracle)
        assert perfect.deadlines_met == perfect.runs
        ridge = simulate_shifting(series, 3, 24, SeasonalRidge(), pausable)
        assert ridge.forecast >= ridge.oracle - 1e-6
        assert ridge.deadlines_met == ridge.runs
        assert 0 < ridge.savings_pct <= ridge.oracle_savings_pct
