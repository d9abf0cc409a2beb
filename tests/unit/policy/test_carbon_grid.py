"""The grid-aware forecast uses a published value only once it is public, and uses it then."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kapell.policy.carbon.forecast import DAY_H, FIRST_ORIGIN, SeasonalRidge, mae_by_lead
from kapell.policy.carbon.grid import GridRidge, HourlyGrid, grid_to_hourly

DAYS = 25
FIRST_GRID_ROW = FIRST_ORIGIN + 7 * DAY_H  # rows before this are the history ridge's


def _world(seed: int) -> tuple[np.ndarray, HourlyGrid]:
    """Intensity driven by a windy residual load, and its day-ahead forecast (noon of D-1)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(DAYS * DAY_H)
    load = 50_000 + 8_000 * np.sin(2 * np.pi * (hours - 6) / DAY_H)
    solar = np.maximum(0.0, 20_000 * np.sin(2 * np.pi * (hours - 5) / DAY_H))
    wind = np.abs(np.cumsum(rng.normal(0, 1_500, len(hours)))) + 2_000
    intensity = 100 + 8e-3 * (load - solar - wind) + rng.normal(0, 5, len(hours))
    published = (hours // DAY_H - 1) * DAY_H + 12
    noisy = [x * rng.normal(1.0, 0.05, len(hours)) for x in (load, solar, wind)]
    return intensity, HourlyGrid(0, published.astype(np.int64), *noisy)


def _replace_unpublished(grid: HourlyGrid, cut: int, seed: int) -> HourlyGrid:
    rng = np.random.default_rng(seed)
    later = grid.published_h > cut

    def scramble(x: np.ndarray) -> np.ndarray:
        return np.where(later, rng.uniform(0, 90_000, len(x)), x)

    return HourlyGrid(grid.start_h, grid.published_h, scramble(grid.load_mw),
                      scramble(grid.solar_mw), scramble(grid.wind_mw))  # fmt: skip


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    day=st.integers(FIRST_GRID_ROW // DAY_H, DAYS - 1),
    hour=st.one_of(st.just(11), st.integers(0, DAY_H - 1)),  # 11: the hour before publication
)
@example(seed=0, day=DAYS - 5, hour=11)
def test_no_row_depends_on_later_hours_or_unpublished_forecasts(
    seed: int, day: int, hour: int
) -> None:
    cut = max(1, day * DAY_H + hour)
    values, grid = _world(seed)
    changed = values.copy()
    changed[cut:] = np.random.default_rng(seed + 1).uniform(0, 1000, len(values) - cut)
    before = GridRidge(grid).matrix(values, 30)
    after = GridRidge(_replace_unpublished(grid, cut, seed + 2)).matrix(changed, 30)
    np.testing.assert_array_equal(before[: cut + 1], after[: cut + 1])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), day=st.integers(FIRST_GRID_ROW // DAY_H + 1, DAYS - 2))
def test_a_value_is_used_from_the_hour_it_is_published(seed: int, day: int) -> None:
    """The other side of the rule: the test above would pass for a forecaster that never looked."""
    values, grid = _world(seed)
    noon = day * DAY_H + 12  # tomorrow's forecasts become public now
    tomorrow = slice((day + 1) * DAY_H, (day + 2) * DAY_H)
    wind = grid.wind_mw.copy()
    wind[tomorrow] += 30_000
    moved = HourlyGrid(grid.start_h, grid.published_h, grid.load_mw, grid.solar_mw, wind)
    before = GridRidge(grid).matrix(values, 30)
    after = GridRidge(moved).matrix(values, 30)
    np.testing.assert_array_equal(before[noon - 1], after[noon - 1])
    assert not np.array_equal(before[noon, 12:30], after[noon, 12:30])


def test_it_beats_the_history_ridge_when_the_weather_drives_the_grid() -> None:
    values, grid = _world(11)
    errors = {
        f.name: mae_by_lead(values, f.matrix(values, 24), FIRST_GRID_ROW).mean()
        for f in (GridRidge(grid), SeasonalRidge())
    }
    assert errors["grid-ridge"] < 0.6 * errors["seasonal-ridge"]


def test_hourly_means_keep_the_latest_publication_and_skip_missing_values() -> None:
    quarter = 900.0
    grid = grid_to_hourly(
        times_s=[0.0, quarter, 2 * quarter, 3 * quarter, 3600.0],
        published_s=[-7200.0, -3600.0, -3600.0, -3600.0, -1800.0],
        load_mw=[10.0, 20.0, float("nan"), 30.0, 5.0],
        solar_mw=[0.0] * 5,
        wind_mw=[1.0] * 5,
    )
    assert grid.start_h == 0
    np.testing.assert_allclose(grid.load_mw, [20.0, 5.0])
    np.testing.assert_array_equal(grid.published_h, [-1, 0])
    shifted = grid.window(-1, 4)
    assert np.isnan(shifted.load_mw[0]) and np.isnan(shifted.load_mw[3])
    np.testing.assert_allclose(shifted.load_mw[1:3], [20.0, 5.0])
