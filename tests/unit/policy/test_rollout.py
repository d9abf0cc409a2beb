"""The rollout policy's sequential test: its arithmetic, and how often it is wrong.

The error rates are measured on simulated traffic (binomial errors per one-second tick, the
canary's share set by the step it is on), many rollouts per case: a version that is no
worse is rarely rolled back, one that is several times worse is rarely promoted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kapell.api.prompt import PromptRollout, VersionCounts
from kapell.policy import rollout

RUNS = 400


def test_bounds_and_increment_match_the_worked_example() -> None:
    spec = PromptRollout()
    lower, upper = rollout.bounds(spec)
    assert upper == pytest.approx(math.log(0.8 / (0.05 / 3)))  # 3.87
    assert lower == pytest.approx(math.log(0.2 / (1 - 0.05 / 3)))
    # 5 canary requests and 95 stable ones; one canary error, no stable error.
    assert rollout.llr_increment(5, 95, 1, 0, 2.0) == pytest.approx(0.644, abs=1e-3)
    assert rollout.llr_increment(5, 95, 0, 1, 2.0) == pytest.approx(-0.049, abs=1e-3)
    assert rollout.llr_increment(0, 95, 3, 1, 2.0) == 0.0  # no canary exposure: no evidence


def _rollout_outcome(
    spec: PromptRollout, gen: np.random.Generator, stable_rate: float, canary_rate: float
) -> str:
    """Run one simulated rollout to its end: ``promote`` or ``rollback``."""
    requests_per_tick = 40
    progress = rollout.start(spec, 0.0)
    for tick in range(1, 10_000):
        share = spec.steps[progress.step] / 100
        canary_n = int(gen.binomial(requests_per_tick, share))
        stable_n = requests_per_tick - canary_n
        decision = rollout.decide(
            spec,
            progress,
            VersionCounts(requests=stable_n, errors=int(gen.binomial(stable_n, stable_rate))),
            VersionCounts(requests=canary_n, errors=int(gen.binomial(canary_n, canary_rate))),
            float(tick),
        )
        if decision.action in ("promote", "rollback"):
            return decision.action
        progress = decision.progress
    raise AssertionError("the rollout never ended")


SPEC = PromptRollout(steps=[5, 25, 50, 100], step_interval="10s", min_requests=50)


def test_a_version_no_worse_is_rarely_rolled_back() -> None:
    gen = np.random.default_rng(7)
    outcomes = [_rollout_outcome(SPEC, gen, 0.05, 0.05) for _ in range(RUNS)]
    false_rollbacks = outcomes.count("rollback") / RUNS
    # Bounded by alpha / (1 - beta) = 0.0625 whatever the traffic; sampling slack on top.
    assert false_rollbacks <= 0.0625 + 3 * math.sqrt(0.0625 * 0.9375 / RUNS)


def test_a_version_three_times_worse_is_rarely_promoted() -> None:
    gen = np.random.default_rng(11)
    outcomes = [_rollout_outcome(SPEC, gen, 0.05, 0.15) for _ in range(RUNS)]
    false_promotions = outcomes.count("promote") / RUNS
    assert false_promotions <= 0.05


def test_a_broken_version_is_rolled_back_at_the_first_step() -> None:
    gen = np.random.default_rng(3)
    progress = rollout.start(SPEC, 0.0)
    for tick in range(1, 100):
        decision = rollout.decide(
            SPEC,
            progress,
            VersionCounts(requests=38, errors=int(gen.binomial(38, 0.01))),
            VersionCounts(requests=2, errors=2),
            float(tick),
        )
        if decision.action != "hold":
            break
        progress = decision.progress
    assert decision.action == "rollback" and decision.progress.step == 0
    assert decision.reason.startswith("errors: log-likelihood ratio")


def test_negative_feedback_rolls_back_and_slow_answers_count() -> None:
    progress = rollout.start(SPEC, 0.0)
    bad_feedback = VersionCounts(requests=12, feedback=12, negative=12)
    good_feedback = VersionCounts(requests=28, feedback=28, negative=2)
    decision = rollout.decide(SPEC, progress, good_feedback, bad_feedback, 1.0)
    assert decision.action == "rollback" and decision.reason.startswith("negative:")
    slow = rollout.decide(
        SPEC, progress, VersionCounts(requests=30, slow=1), VersionCounts(requests=10, slow=10), 1.0
    )
    assert slow.action == "rollback" and slow.reason.startswith("slow:")


def test_steps_wait_for_time_and_traffic_then_promote() -> None:
    spec = PromptRollout(steps=[50, 100], step_interval="5s", min_requests=10)
    progress = rollout.start(spec, 0.0)
    held = rollout.decide(
        spec, progress, VersionCounts(requests=20), VersionCounts(requests=20), 4.0
    )
    assert held.action == "hold" and held.progress.step_requests == 20
    early = rollout.decide(
        spec, progress, VersionCounts(requests=1), VersionCounts(requests=1), 9.0
    )
    assert early.action == "hold"  # time is up but only 1 of 10 canary requests
    done = rollout.decide(spec, held.progress, VersionCounts(), VersionCounts(), 5.0)
    assert done.action == "promote" and done.progress.step == 1
    assert done.progress.evidence.canary.requests == 20


def test_an_interval_with_one_version_only_waits_for_the_other() -> None:
    progress = rollout.start(SPEC, 0.0)
    only_canary = rollout.decide(
        SPEC, progress, VersionCounts(), VersionCounts(requests=3, errors=3), 1.0
    )
    assert only_canary.progress.evidence.llr["errors"] == 0.0  # nothing to compare with yet
    assert only_canary.progress.evidence.pending_canary.errors == 3
    both = rollout.decide(
        SPEC, only_canary.progress, VersionCounts(requests=12), VersionCounts(), 2.0
    )
    assert both.progress.evidence.llr["errors"] == pytest.approx(
        rollout.llr_increment(3, 12, 3, 0, SPEC.worse_by)
    )
    assert both.progress.evidence.pending_canary == VersionCounts()
