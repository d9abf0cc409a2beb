"""The live spot decision: the benchmark's kapell policy, with its reason."""

from __future__ import annotations

import pytest

from kapell.policy.spot.decide import POLICIES, Capacity, JobState
from kapell.policy.spot.live import decide

H = 3600.0


def _state(**changes: object) -> JobState:
    base: dict[str, object] = {
        "elapsed_s": 0.0, "work_s": 2 * H, "work_left_s": 2 * H, "deadline_s": 4 * H,
        "restart_overhead_s": 300.0, "interval_s": 60.0, "running": Capacity.WAIT,
        "overhead_left_s": 0.0, "spot_available": True,
    }  # fmt: skip
    return JobState(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "state",
    [
        _state(),
        _state(spot_available=False, elapsed_s=H, work_left_s=1.9 * H),
        _state(spot_available=False, elapsed_s=10 * 60, work_left_s=1.9 * H),
        _state(spot_available=False, elapsed_s=2 * H, work_left_s=1.9 * H),
    ],
)
def test_the_live_decision_is_the_benchmarks_kapell_policy(state: JobState) -> None:
    assert decide(state).capacity == POLICIES["kapell"](state)


def test_the_reason_names_what_decided() -> None:
    assert decide(_state()).reason.startswith("spot is up")
    tight = decide(_state(spot_available=False, elapsed_s=2.1 * H - 330, work_left_s=1.9 * H))
    assert tight.capacity == Capacity.ON_DEMAND
    assert tight.reason.startswith("only on-demand still meets the deadline")
