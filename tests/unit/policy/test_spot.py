"""Spot policies: deadlines under any availability, the exact optimum, the rules themselves."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.api.errors import KapellError
from kapell.policy.spot.decide import (
    POLICIES,
    Capacity,
    JobState,
    Policy,
    kapell,
    uniform_progress,
    worth_leaving_on_demand,
)
from kapell.policy.spot.optimal import optimal_costs
from kapell.policy.spot.replay import SpotJob, replay

SPOT, OD, WAIT = Capacity.SPOT, Capacity.ON_DEMAND, Capacity.WAIT


@st.composite
def jobs_on_traces(draw: st.DrawFn, max_ticks: int = 60) -> tuple[SpotJob, list[bool], int]:
    """A feasible job (work + one restart fits the deadline) and an availability sequence."""
    tick = draw(st.sampled_from([60, 195, 300, 600]))
    ticks = draw(st.integers(1, max_ticks))
    deadline = draw(st.integers(1, ticks * tick))
    overhead = draw(st.integers(0, min(deadline - 1, 3 * tick)))
    work = draw(st.integers(1, deadline - overhead))
    up = draw(st.lists(st.booleans(), min_size=ticks, max_size=ticks))
    return SpotJob(work, deadline, overhead), up, tick


@settings(max_examples=200, deadline=None)
@given(case=jobs_on_traces())
def test_every_online_policy_meets_the_deadline_whatever_spot_does(
    case: tuple[SpotJob, list[bool], int],
) -> None:
    job, up, tick = case
    for name, policy in POLICIES.items():
        outcome = replay(policy, job, up, tick)
        assert outcome.met_deadline, name
        assert outcome.finished_s is not None and outcome.finished_s <= job.deadline_s + 1e-9


@settings(max_examples=100, deadline=None)
@given(case=jobs_on_traces(max_ticks=40))
def test_the_optimum_costs_no_more_than_any_policy(case: tuple[SpotJob, list[bool], int]) -> None:
    job, up, tick = case
    best = optimal_costs(job, np.array([up]), tick)[0]
    assert math.isfinite(best)
    for name, policy in POLICIES.items():
        assert best <= replay(policy, job, up, tick).cost + 1e-9, name


def _scripted(choices: Iterator[Capacity]) -> Policy:
    """A "policy" that plays back a fixed sequence of choices."""
    return lambda _: next(choices)


def _brute_force(job: SpotJob, up: list[bool], tick: int) -> float:
    """The cheapest of every sequence of choices, each replayed under the same rules."""
    best = math.inf
    for choices in itertools.product([WAIT, SPOT, OD], repeat=len(up)):
        if any(c == SPOT and not u for c, u in zip(choices, up, strict=True)):
            continue
        outcome = replay(_scripted(iter(choices)), job, up, tick)
        if outcome.met_deadline:
            best = min(best, outcome.cost)
    return best


@settings(max_examples=60, deadline=None)
@given(
    tick=st.sampled_from([2, 3, 5]),
    up=st.lists(st.booleans(), min_size=1, max_size=6),
    data=st.data(),
)
def test_the_optimum_equals_brute_force_on_short_traces(
    tick: int, up: list[bool], data: st.DataObject
) -> None:
    deadline = data.draw(st.integers(1, len(up) * tick))
    overhead = data.draw(st.integers(0, 2 * tick))
    work = data.draw(st.integers(1, deadline))
    job = SpotJob(work, deadline, overhead, spot_price_per_h=1.0, on_demand_price_per_h=3.0)
    assert optimal_costs(job, np.array([up]), tick)[0] == pytest.approx(
        _brute_force(job, up, tick), abs=1e-12
    )


def test_optimum_solves_many_starts_at_once_and_says_inf_when_impossible() -> None:
    job = SpotJob(work_s=1200, deadline_s=1800, restart_overhead_s=300)
    rows = np.array([[True] * 3, [False] * 3])
    spot, on_demand = optimal_costs(job, rows, 600)
    assert spot == pytest.approx(1500 * job.price_per_s(SPOT))
    assert on_demand == pytest.approx(job.on_demand_cost)
    late = SpotJob(work_s=1600, deadline_s=1800, restart_overhead_s=300)
    assert optimal_costs(late, rows, 600).tolist() == [math.inf, math.inf]


def test_replay_bills_restarts_and_stops_billing_when_done() -> None:
    job = SpotJob(work_s=1000, deadline_s=3000, restart_overhead_s=100)
    assert replay(POLICIES["on_demand"], job, [False] * 5, 600).cost == pytest.approx(
        job.on_demand_cost
    )
    # spot up, down, up: preempted once, so two starts and two overheads on spot
    outcome = replay(POLICIES["greedy"], job, [True, False, True, True, True], 600)
    assert outcome.starts == 2
    assert outcome.spot_s == pytest.approx(1000 + 2 * 100)
    assert outcome.finished_s == pytest.approx(1200 + 100 + 500)


def test_a_policy_choosing_spot_while_it_is_down_is_a_bug() -> None:
    job = SpotJob(work_s=600, deadline_s=1800, restart_overhead_s=0)
    with pytest.raises(ValueError, match="spot is down"):
        replay(lambda _: SPOT, job, [False, True, True], 600)


def _state(**changes: object) -> JobState:
    base = JobState(
        elapsed_s=10 * 3600, work_s=48 * 3600, work_left_s=40 * 3600, deadline_s=52 * 3600,
        restart_overhead_s=600, interval_s=600, running=WAIT, overhead_left_s=0,
        spot_available=False,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_uniform_progress_rules() -> None:
    line = 10 * 3600 * 48 / 52  # work the uniform line expects done at 10 h
    behind = _state(work_left_s=48 * 3600 - line + 60)
    ahead = _state(work_left_s=48 * 3600 - line - 60)
    assert uniform_progress(behind) == OD
    assert uniform_progress(ahead) == WAIT
    assert uniform_progress(replace(behind, spot_available=True)) == SPOT  # exploitation
    # hysteresis: on on-demand, stays until 2d ahead of the line
    assert uniform_progress(replace(ahead, running=OD)) == OD
    far_ahead = _state(work_left_s=48 * 3600 - line - 1200, running=OD)
    assert uniform_progress(far_ahead) == WAIT
    # safety net: slack under 2d
    tight = _state(work_left_s=42 * 3600 - 1100, spot_available=True, running=WAIT)
    assert uniform_progress(tight) == OD


def test_kapell_keeps_on_demand_for_a_short_lead_and_for_short_lived_spot() -> None:
    line = 10 * 3600 * 48 / 52
    far_ahead = _state(work_left_s=48 * 3600 - line - 1200, running=OD)
    assert kapell(far_ahead) == OD
    flicker = replace(far_ahead, spot_available=True, spot_up_s=0, spot_runs_s=(195.0,) * 20)
    assert not worth_leaving_on_demand(flicker)
    assert kapell(flicker) == OD
    lasting = replace(flicker, spot_runs_s=(195.0, 5 * 3600.0))
    assert worth_leaving_on_demand(lasting)
    assert kapell(lasting) == SPOT


def test_optimum_needs_whole_seconds() -> None:
    job = SpotJob(work_s=1200.5, deadline_s=1800, restart_overhead_s=300)
    with pytest.raises(KapellError, match="whole seconds"):
        optimal_costs(job, np.array([[True] * 3]), 600)
