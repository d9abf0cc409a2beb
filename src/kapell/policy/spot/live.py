"""The spot policy as the live TrainingJob controller applies it, and where its answer runs.

``decide`` is the benchmark's ``kapell`` policy (``decide.POLICIES``) with a sentence saying
why; ``placement`` turns a capacity into the node selector and tolerations of a GPUPool's spot
or on-demand node group (what a RayJob's worker group gets on Kubernetes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kapell.api.errors import KapellError
from kapell.api.kinds import GPUPoolSpec
from kapell.policy.spot.decide import POLICIES, Capacity, JobState, is_safe

POLICY = "kapell"
"""The policy the live controller applies: the one ``kapell bench spot`` reports as kapell."""

DECISION_INTERVAL_S = 60.0
"""How long a live decision holds (the controller decides again at least this often)."""

CAPACITY_LABEL = "karpenter.sh/capacity-type"
"""The node label of spot versus on-demand capacity (Karpenter's; the dev cluster sets it)."""

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


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


@dataclass(frozen=True)
class Placement:
    """Where a worker group of one capacity may run: a Pod's ``nodeSelector`` and
    ``tolerations``."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, str]] = field(default_factory=list)


def placement(capacity: Capacity, pool: GPUPoolSpec | None = None) -> Placement:
    """The node selector (and, for spot, the toleration of the spot taint) of ``capacity``.

    With a GPUPool, the selector also names the GPU of its first node group of that capacity;
    a pool without such a group cannot place it (a clear error, not a pod that never schedules).
    """
    if capacity == Capacity.WAIT:
        raise KapellError("a waiting worker group has no placement: it holds no nodes")
    spot = capacity == Capacity.SPOT
    value = "spot" if spot else "on-demand"
    selector = {CAPACITY_LABEL: value}
    if pool is not None:
        group = next((g for g in pool.nodes if g.spot == spot), None)
        if group is None:
            raise KapellError(
                f"the GPUPool has no {value} node group (nodes[].spot: {str(spot).lower()}); "
                "add one or run the worker group on the other capacity"
            )
        selector[GPU_PRODUCT_LABEL] = group.gpu_model.replace(" ", "-")
    tolerations = (
        [{"key": CAPACITY_LABEL, "operator": "Equal", "value": "spot", "effect": "NoSchedule"}]
        if spot
        else []
    )
    return Placement(selector, tolerations)
