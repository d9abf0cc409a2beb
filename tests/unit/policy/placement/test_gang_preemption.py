"""Gangs are all-or-nothing; preemption evicts the least it can."""

from __future__ import annotations

import numpy as np

from kapell.policy.placement.gang import place_gang
from kapell.policy.placement.inventory import Inventory, NodeSpec
from kapell.policy.placement.policies import make_policy
from kapell.policy.placement.preemption import Running, plan_preemption
from kapell.policy.placement.requests import GPU_MILLI, PodRequest


def cluster() -> Inventory:
    return Inventory([NodeSpec(f"n{i}", 32_000, 65_536, 4, "V100M32") for i in range(2)])


def whole(name: str, gpus: int, priority: int = 0) -> PodRequest:
    return PodRequest(name, 1000, 1024, gpus, GPU_MILLI, priority=priority)


def test_gang_that_fits_is_placed_whole() -> None:
    inv = cluster()
    gang = [whole("w0", 4), whole("w1", 2), whole("w2", 2)]
    decisions = place_gang(inv, gang, make_policy("kapell", gang), np.random.default_rng(0))
    assert decisions is not None and len(decisions) == 3
    assert int(inv.gpu_left.sum()) == 0


def test_gang_that_does_not_fit_leaves_inventory_untouched() -> None:
    inv = cluster()
    first = make_policy("best-fit").select(inv, whole("x", 1), np.random.default_rng(0))
    assert first is not None
    inv.place(whole("x", 1), first)
    before = inv.gpu_left.copy(), inv.cpu_left.copy()
    gang = [whole("w0", 4), whole("w1", 4)]
    assert place_gang(inv, gang, make_policy("best-fit"), np.random.default_rng(0)) is None
    assert (inv.gpu_left == before[0]).all() and (inv.cpu_left == before[1]).all()


def test_preemption_picks_fewest_lowest_priority_victims() -> None:
    inv = cluster()
    rng = np.random.default_rng(0)
    policy = make_policy("best-fit")
    running = []
    # node 0: four 1-GPU pods at priority 1; node 1: one 4-GPU pod at priority 5
    for i in range(4):
        req = whole(f"small{i}", 1, priority=1)
        d = policy.select(inv, req, rng)
        assert d is not None
        inv.place(req, d)
        running.append(Running(req, d))
    big = whole("big", 4, priority=5)
    d = policy.select(inv, big, rng)
    assert d is not None
    inv.place(big, d)
    running.append(Running(big, d))
    plan = plan_preemption(inv, whole("urgent", 2, priority=10), running)
    assert plan is not None
    assert len(plan.victims) == 1 and plan.victims[0].request.name == "big"
    # a request at priority 3 may only evict the priority-1 pods, and needs two of them
    plan = plan_preemption(inv, whole("medium", 2, priority=3), running)
    assert plan is not None
    assert len(plan.victims) == 2
    assert all(v.request.priority == 1 for v in plan.victims)
    node = plan.victims[0].decision.node_index
    assert all(v.decision.node_index == node == plan.decision.node_index for v in plan.victims)
    assert inv.gpu_left.sum() == 0  # planning did not change the inventory


def test_no_preemption_of_equal_or_higher_priority() -> None:
    inv = cluster()
    rng = np.random.default_rng(0)
    running = []
    for i in range(2):
        req = whole(f"r{i}", 4, priority=7)
        d = make_policy("random").select(inv, req, rng)
        assert d is not None
        inv.place(req, d)
        running.append(Running(req, d))
    assert plan_preemption(inv, whole("same", 1, priority=7), running) is None
