"""The spot policy as the live TrainingJob controller applies it.

``decide`` is the benchmark's ``kapell`` policy (``decide.POLICIES``) with a sentence saying
why. Where its answer runs is the backend's: locally a label on the Ray workers, on Kubernetes
the node affinity and tolerations of the GPUPools' node groups of that capacity
(``backends/kubernetes/rayjob.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kapell.policy.spot.decide import POLICIES, Capacity, JobState, is_safe

POLICY = "kapell"
"""The policy the live controller applies: the one ``kapell bench spot`` reports as kapell."""

DECISION_INTERVAL_S = 60.0
"""How long a live decision holds (the controller decides again at least this often)."""


@dataclass(frozen=True)
class Decision:
    """What the job runs on next, and why (shown in its status)."""

    capacity: Capacity
    reason: str


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def decide(state: JobState) -> Decision:
    """The ``kapell`` policy's choice for ``state``, with the facts it rests on."""
    choice = POLICIES[POLICY](state)
    slack = state.time_left_s - state.work_left_s
    facts = (
        f"spot {'up' if state.spot_available else 'down'}, {_h(state.work_left_s)} of work "
        f"left, {_h(state.time_left_s)} to the deadline (slack {_h(slack)})"
    )
    if choice == Capacity.ON_DEMAND and not is_safe(state, Capacity.WAIT):
        why = "only on-demand still meets the deadline"
    elif choice == Capacity.ON_DEMAND and not state.spot_available:
        why = "spot is down and progress is behind the uniform-progress line"
    elif choice == Capacity.ON_DEMAND:
        why = "the spot period under way is not expected to repay a switch"
    elif choice == Capacity.SPOT:
        why = "spot is up and the deadline stays safe"
    else:
        why = "ahead of schedule: waiting for spot costs nothing"
    return Decision(choice, f"{why}; {facts}")
