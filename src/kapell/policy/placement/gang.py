"""Gang placement: a set of pods is placed whole or not at all."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kapell.policy.placement.inventory import Decision, Inventory
from kapell.policy.placement.policies import Policy
from kapell.policy.placement.requests import PodRequest


def place_gang(
    inv: Inventory, gang: Sequence[PodRequest], policy: Policy, rng: np.random.Generator
) -> list[Decision] | None:
    """Place every pod of ``gang`` in ``inv``, or none of them.

    Pods go largest GPU demand first (the hardest to fit, while the most room is left).
    On the first pod that fits nowhere, everything placed so far is released, so ``inv``
    is exactly as before, and the result is None.
    """
    order = sorted(
        range(len(gang)),
        key=lambda i: (-gang[i].total_gpu_milli, -gang[i].cpu_milli, gang[i].name),
    )
    placed: list[tuple[int, Decision]] = []
    for i in order:
        decision = policy.select(inv, gang[i], rng)
        if decision is None:
            for j, done in reversed(placed):
                inv.release(gang[j], done)
            return None
        inv.place(gang[i], decision)
        placed.append((i, decision))
    by_pod = dict(placed)
    return [by_pod[i] for i in range(len(gang))]
