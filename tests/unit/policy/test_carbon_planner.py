"""The planner: oracle optimality, spatial choice, and deadlines under any forecast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.api.errors import KapellError
from kapell.policy.carbon.planner import DeferrableJob, Progress, next_region, plan

intensities = st.lists(st.floats(0, 1000, allow_nan=False), min_size=2, max_size=48)


@given(values=intensities, data=st.data())
def test_oracle_is_the_cheapest_contiguous_run(values: list[float], data: st.DataObject) -> None:
    duration = data.draw(st.integers(1, len(values)))
    job = DeferrableJob(duration, 0, len(values))
    best = min(sum(values[s : s + duration]) for s in range(len(values) - duration + 1))
    result = plan(job, 0, {"a": values})
    assert result.intensity_sum == pytest.approx(best, abs=1e-6)
    hours = [h for h, _ in result.slots]
    assert hours == list(range(hours[0], hours[0] + duration))


@given(values=intensities, data=st.data())
def test_pausable_oracle_takes_the_cheapest_hours(values: list[float], data: st.DataObject) -> None:
    duration = data.draw(st.integers(1, len(values)))
    pausable = plan(DeferrableJob(duration, 0, len(values), pausable=True), 0, {"a": values})
    fixed = plan(DeferrableJob(duration, 0, len(values)), 0, {"a": values})
    assert pausable.intensity_sum == pytest.approx(sum(sorted(values)[:duration]), abs=1e-6)
    assert pausable.intensity_sum <= fixed.intensity_sum + 1e-6


def test_spatial_plan_picks_the_cleaner_region_and_respects_allowed_regions() -> None:
    grid = {"dirty": [500.0] * 6, "clean": [100.0, 90.0, 80.0, 300.0, 300.0, 300.0]}
    job = DeferrableJob(2, 10, 16)
    assert plan(job, 10, grid).slots == ((11, "clean"), (12, "clean"))
    only_dirty = DeferrableJob(2, 10, 16, regions=("dirty",))
    assert {r for _, r in plan(only_dirty, 10, grid).slots} == {"dirty"}


def test_a_started_job_that_cannot_pause_keeps_running_where_it_started() -> None:
    job = DeferrableJob(3, 0, 10)
    forecast = {"a": [900.0] * 10, "b": [1.0] * 10}
    assert next_region(job, 4, forecast, Progress(1, "a")) == "a"


def test_impossible_deadlines_are_user_errors() -> None:
    with pytest.raises(KapellError, match="cannot finish"):
        DeferrableJob(5, 0, 4)
    with pytest.raises(KapellError, match="no longer meet"):
        plan(DeferrableJob(2, 0, 4), 3, {"a": [1.0]})


@settings(max_examples=60)
@given(
    truth=st.lists(st.floats(0, 1000, allow_nan=False), min_size=30, max_size=30),
    noise_seed=st.integers(0, 2**31),
    duration=st.integers(1, 6),
    pausable=st.booleans(),
)
def test_online_rule_meets_every_deadline_whatever_the_forecast(
    truth: list[float], noise_seed: int, duration: int, pausable: bool
) -> None:
    rng = np.random.default_rng(noise_seed)
    job = DeferrableJob(duration, 0, 30, pausable, ("a", "b"))
    progress = Progress()
    for now in range(30):
        wild = {r: rng.uniform(0, 1000, 30 - now) for r in ("a", "b")}
        region = next_region(job, now, wild, progress)
        if region is not None:
            progress = Progress(progress.done_h + 1, region)
    assert progress.done_h == duration
