"""The live spot decision (the benchmark's kapell policy, with its reason) and where each
capacity runs on Kubernetes."""

from __future__ import annotations

import pytest

from kapell.api.errors import KapellError
from kapell.api.kinds import GPUPoolSpec
from kapell.policy.spot.decide import POLICIES, Capacity, JobState
from kapell.policy.spot.live import CAPACITY_LABEL, decide, placement

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


def test_placement_selects_the_pools_capacity_group() -> None:
    pool = GPUPoolSpec.model_validate({
        "nodes": [
            {"gpuModel": "NVIDIA H100", "count": 2},
            {"gpuModel": "NVIDIA A100", "count": 4, "spot": True},
        ]
    })  # fmt: skip
    spot = placement(Capacity.SPOT, pool)
    assert spot.node_selector == {CAPACITY_LABEL: "spot", "nvidia.com/gpu.product": "NVIDIA-A100"}
    assert spot.tolerations == [
        {"key": CAPACITY_LABEL, "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
    ]
    on_demand = placement(Capacity.ON_DEMAND, pool)
    assert on_demand.node_selector[CAPACITY_LABEL] == "on-demand"
    assert on_demand.node_selector["nvidia.com/gpu.product"] == "NVIDIA-H100"
    assert on_demand.tolerations == []
    with pytest.raises(KapellError, match="no spot node group"):
        placement(Capacity.SPOT, GPUPoolSpec.model_validate({"nodes": [{"gpuModel": "L4"}]}))
    with pytest.raises(KapellError, match="holds no nodes"):
        placement(Capacity.WAIT)
