"""The sizing policy: the least GPU share whose smallest serving fleet is found, no formula."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from kapell.policy.sizing import (
    SizeChoice,
    SizeHold,
    SizeOption,
    choose_size,
    fleet_share,
    grow_hold_s,
    resize_hold_s,
)

SLICE = SizeOption("3g", 3 / 7, 4000.0)
SMALL = SizeOption("1g", 1 / 7, 1000.0)
GPU = SizeOption("gpu", 1.0, 9000.0)


def _needs(replicas_needed: dict[str, int]):  # type: ignore[no-untyped-def]
    tried: list[tuple[str, int]] = []

    def serves(option: SizeOption, replicas: int) -> bool:
        tried.append((option.name, replicas))
        return replicas >= replicas_needed[option.name]

    return serves, tried


def test_a_fleet_starts_where_the_peak_rate_could_carry_the_demand() -> None:
    serves, tried = _needs({"3g": 2})
    assert fleet_share(SLICE, 5000.0, serves, below_share=1.0, max_replicas=8) == 2 * 3 / 7
    assert tried == [("3g", 2)]  # ceil(5000 / 4000) = 2: one replica could not carry it


def test_no_fleet_at_or_above_the_bound_is_tried() -> None:
    serves, tried = _needs({"3g": 3})
    assert fleet_share(SLICE, 5000.0, serves, below_share=1.0, max_replicas=8) == math.inf
    assert tried == [("3g", 2)]  # three slices (9/7) already cost more than a GPU


def test_the_least_share_wins_and_whole_gpus_when_no_slice_beats_one() -> None:
    serves, _ = _needs({"1g": 7, "3g": 2})  # seven 1g slices make a whole GPU: no saving
    assert choose_size([SMALL, SLICE, GPU], 3000.0, serves, max_replicas=8) == (SLICE, 6 / 7)
    serves, _ = _needs({"1g": 9, "3g": 3})
    assert choose_size([SMALL, SLICE, GPU], 3000.0, serves, max_replicas=8) == (GPU, 1.0)


@given(st.integers(1, 9), st.integers(1, 5), st.floats(1.0, 20_000.0))
def test_the_choice_never_costs_more_than_a_whole_gpu(small: int, mid: int, rate: float) -> None:
    serves, _ = _needs({"1g": small, "3g": mid})
    chosen, _ = choose_size([SMALL, SLICE, GPU], rate, serves, max_replicas=64)
    if chosen != GPU:
        assert fleet_share(chosen, rate, serves, below_share=1.0, max_replicas=64) < 1.0


# --- live re-sizing: hysteresis ----------------------------------------------------------------


def test_the_first_pick_applies_at_once_and_a_new_one_only_after_holding() -> None:
    hold = SizeHold(hold_s=300.0)
    assert hold.offer(0.0, SizeChoice("3g", "small demand")).size == "3g"
    # Demand rose: "gpu" is picked, but the 3g slices stay until the pick has held 300 s.
    for t_s in (30.0, 150.0, 329.0):
        kept = hold.offer(t_s, SizeChoice("gpu", "big demand"))
        assert kept.size == "3g" and "gpu picked" in kept.reason, kept
    resized = hold.offer(330.0, SizeChoice("gpu", "big demand"))
    assert resized.size == "gpu" and "held 300s" in resized.reason


def test_a_pick_that_flips_back_within_the_hold_resizes_nothing() -> None:
    hold = SizeHold(hold_s=300.0)
    hold.offer(0.0, SizeChoice("3g", "small"))
    hold.offer(30.0, SizeChoice("gpu", "burst"))
    assert hold.offer(200.0, SizeChoice("3g", "small again")).size == "3g"
    # The burst's pick starts over: 300 s from its return, not from its first appearance.
    assert hold.offer(230.0, SizeChoice("gpu", "burst")).size == "3g"
    assert hold.offer(500.0, SizeChoice("gpu", "burst")).size == "3g"
    assert hold.offer(530.0, SizeChoice("gpu", "burst")).size == "gpu"


def test_a_larger_size_applies_after_the_short_hold_a_smaller_one_after_the_long() -> None:
    hold = SizeHold(hold_s=300.0, grow_hold_s=60.0)
    slice_, gpu = SizeChoice("3g", "small", 3 / 7), SizeChoice("gpu", "burst", 1.0)
    hold.offer(0.0, slice_)
    assert hold.offer(30.0, gpu).size == "3g"
    assert hold.offer(89.0, gpu).size == "3g"
    assert hold.offer(90.0, gpu).size == "gpu"
    assert hold.offer(120.0, slice_).size == "gpu"
    assert hold.offer(419.0, slice_).size == "gpu"
    assert hold.offer(420.0, slice_).size == "3g"


def test_a_guess_made_before_any_demand_gives_way_at_once_to_the_first_informed_pick() -> None:
    hold = SizeHold(hold_s=300.0)
    guess = hold.offer(0.0, SizeChoice("1g", "no demand yet", provisional=True))
    assert guess.size == "1g" and guess.provisional
    # Still nothing seen: the guess stays a guess, even past the hold.
    assert hold.offer(400.0, SizeChoice("1g", "no demand yet", provisional=True)).provisional
    informed = hold.offer(430.0, SizeChoice("gpu", "big demand"))
    assert informed.size == "gpu" and not informed.provisional
    # From here on the hold applies, to demand and to guesses alike.
    assert hold.offer(460.0, SizeChoice("1g", "no demand yet", provisional=True)).size == "gpu"
    assert hold.offer(490.0, SizeChoice("3g", "small demand")).size == "gpu"
    # A guess of the size already running does not make it a guess again.
    assert not hold.offer(520.0, SizeChoice("gpu", "no demand yet", provisional=True)).provisional


def test_the_hold_is_five_cold_starts_and_at_least_five_minutes() -> None:
    assert resize_hold_s(10.0) == 300.0
    assert resize_hold_s(120.0) == 600.0
    assert grow_hold_s(10.0) == 60.0
    assert grow_hold_s(120.0) == 120.0
