"""The trough lending rule: serving's need first, a reserve, whole jobs only."""

from __future__ import annotations

from kapell.policy.trough import Fleet, Lend, lend


def test_serving_takes_the_larger_of_what_it_holds_and_what_it_asked_for() -> None:
    assert Fleet(pool=8, serving_held=3, serving_desired=5, reserve=1).lendable == 2
    assert Fleet(pool=8, serving_held=6, serving_desired=2, reserve=1).lendable == 1
    assert Fleet(pool=4, serving_held=4, serving_desired=6, reserve=1).lendable == 0


def test_a_job_starts_only_whole_and_hands_back_when_serving_needs_its_gpus() -> None:
    quiet = Fleet(pool=8, serving_held=2, serving_desired=2, reserve=1)  # 5 lendable
    assert lend(quiet, needed=4, holding=0) is Lend.START
    assert lend(quiet, needed=6, holding=0) is Lend.WAIT
    assert lend(quiet, needed=4, holding=4) is Lend.KEEP
    burst = Fleet(pool=8, serving_held=2, serving_desired=5, reserve=1)  # 2 lendable
    assert lend(burst, needed=4, holding=4) is Lend.HAND_BACK
    assert lend(burst, needed=2, holding=2) is Lend.KEEP
