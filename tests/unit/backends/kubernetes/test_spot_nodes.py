"""Spot availability on a cluster: Ready nodes of the GPUPools' spot node groups."""

from __future__ import annotations

from typing import Any

from kapell.backends.kubernetes.inventory import NodeView
from kapell.backends.kubernetes.spot_nodes import spot_selectors, spot_up


def _node(name: str, schedulable: bool = True, **labels: str) -> NodeView:
    return NodeView(name, 96000, 1 << 20, schedulable, tuple(sorted(labels.items())))


def _pool(*groups: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kapell.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": "fleet", "namespace": "team"},
        "spec": {"nodes": list(groups)},
    }


SPOT = {"karpenter.sh/capacity-type": "spot"}
ON_DEMAND = {"karpenter.sh/capacity-type": "on-demand"}


def test_without_spot_groups_any_ready_node_labelled_spot_counts() -> None:
    selectors = spot_selectors(_pool({"gpuModel": "H100"}))
    assert selectors == ()
    assert spot_up([_node("a", **ON_DEMAND), _node("b", **SPOT)], selectors)
    assert not spot_up([_node("a", **ON_DEMAND)], selectors)


def test_a_reclaimed_spot_group_is_down_when_its_nodes_are_not_ready_or_gone() -> None:
    selectors = spot_selectors(
        _pool(
            {"gpuModel": "H100", "count": 2},
            {"gpuModel": "H100", "spot": True, "nodeLabels": {"pool": "cheap"}},
        )
    )
    assert selectors == ((("pool", "cheap"),),)
    nodes = [_node("od", **ON_DEMAND), _node("s1", pool="cheap"), _node("s2", pool="cheap")]
    assert spot_up(nodes, selectors)
    # Another node labelled spot is not this pool's spot group.
    assert not spot_up([_node("other", **SPOT)], selectors)
    reclaimed = [nodes[0], _node("s1", False, pool="cheap")]  # s1 NotReady, s2 deleted
    assert not spot_up(reclaimed, selectors)


def test_a_pool_the_schema_refuses_adds_no_spot_group() -> None:
    assert spot_selectors(_pool({"gpuModel": "H100", "count": -1, "spot": True})) == ()
