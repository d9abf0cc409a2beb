"""Preemption: which lower-priority pods to evict so a higher-priority request fits.

Least disruption, in this order: the fewest victims, then the lowest highest victim
priority, then the least GPU milli evicted. Per node the victims are found greedily
(lowest priority, then smallest, first) and then pruned: a victim whose eviction is not
needed once the others are gone is kept running. The inventory is restored exactly
before returning; the caller evicts and places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kapell.policy.placement.fit import decision_for, feasible_nodes
from kapell.policy.placement.inventory import Decision, Inventory
from kapell.policy.placement.requests import PodRequest


@dataclass(frozen=True)
class Running:
    """A placed pod: its request and where it runs."""

    request: PodRequest
    decision: Decision


@dataclass(frozen=True)
class Preemption:
    """Evict ``victims``, then place the request by ``decision``."""

    decision: Decision
    victims: tuple[Running, ...]

    def cost(self) -> tuple[int, int, int]:
        return (
            len(self.victims),
            max((v.request.priority for v in self.victims), default=0),
            sum(v.request.total_gpu_milli for v in self.victims),
        )


def _fits_without(
    inv: Inventory, req: PodRequest, node: int, victims: Sequence[Running]
) -> Decision | None:
    for v in victims:
        inv.release(v.request, v.decision)
    try:
        if feasible_nodes(inv, req)[node]:
            return decision_for(inv, req, node, None)
        return None
    finally:
        for v in reversed(victims):
            inv.place(v.request, v.decision)


def plan_preemption(
    inv: Inventory, req: PodRequest, running: Sequence[Running]
) -> Preemption | None:
    """The least disruptive set of lower-priority pods to evict for ``req``, or None."""
    best: Preemption | None = None
    by_node: dict[int, list[Running]] = {}
    for r in running:
        if r.request.priority < req.priority:
            by_node.setdefault(r.decision.node_index, []).append(r)
    for node in sorted(by_node):
        candidates = sorted(
            by_node[node],
            key=lambda r: (r.request.priority, r.request.total_gpu_milli, r.request.cpu_milli),
        )
        chosen: list[Running] = []
        decision = None
        for victim in candidates:
            chosen.append(victim)
            decision = _fits_without(inv, req, node, chosen)
            if decision is not None:
                break
        if decision is None:
            continue
        for victim in list(reversed(chosen)):
            rest = [v for v in chosen if v is not victim]
            kept = _fits_without(inv, req, node, rest)
            if kept is not None:
                chosen, decision = rest, kept
        option = Preemption(decision, tuple(chosen))
        if best is None or option.cost() < best.cost():
            best = option
    return best
