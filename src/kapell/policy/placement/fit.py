"""Which nodes can take a request at all, and which GPUs on a node it would use.

Every policy filters with the same rules, so the policies differ only in how they rank
the nodes that fit. GPU indices for whole-GPU requests are the lowest free ones, as the
FGD simulator does; share requests pick a GPU by the policy's own rule.
"""

from __future__ import annotations

import numpy as np

from kapell.policy.placement.inventory import BoolArray, Decision, Inventory
from kapell.policy.placement.mig import MigSlice
from kapell.policy.placement.requests import GPU_MILLI, PodRequest


def feasible_nodes(inv: Inventory, req: PodRequest) -> BoolArray:
    """Nodes with enough CPU, memory and a qualifying GPU (or MIG slot) for ``req``."""
    ok = (inv.cpu_left >= req.cpu_milli) & (inv.memory_left >= req.memory_mib)
    if req.node_selector:
        ok &= inv.label_mask(req.node_selector)
    if req.gpu_count == 0:
        return ok
    ok &= inv.model_mask(req.gpu_models) & (inv.gpu_memory_mib >= req.min_gpu_memory_mib)
    if req.is_mig:
        assert req.mig_profile is not None
        mig_ok = np.zeros(len(inv.nodes), dtype=bool)
        for (i, _g), gpu in inv.mig.items():
            if ok[i] and not mig_ok[i] and gpu.find_start(req.mig_profile) is not None:
                mig_ok[i] = True
        return ok & mig_ok
    if req.is_share:
        has_room: BoolArray = np.any(inv.gpu_left >= req.gpu_milli, axis=1)
        return ok & has_room
    free = (inv.gpu_left == GPU_MILLI).sum(axis=1)
    enough: BoolArray = free >= req.gpu_count
    return ok & enough


def whole_gpu_indices(inv: Inventory, node: int, count: int) -> tuple[int, ...]:
    """The ``count`` lowest-indexed fully free GPUs of ``node``."""
    free = np.flatnonzero(inv.gpu_left[node] == GPU_MILLI)
    return tuple(int(g) for g in free[:count])


def best_fit_gpu(inv: Inventory, node: int, milli: int) -> int:
    """The GPU with the least room that still fits ``milli`` (lowest index on ties)."""
    left = inv.gpu_left[node]
    room = np.where(left >= milli, left, GPU_MILLI + 1)
    return int(np.argmin(room))


def mig_decision(inv: Inventory, req: PodRequest, node: int) -> Decision | None:
    """The first MIG GPU on ``node`` with a free start slot for the request's profile."""
    assert req.mig_profile is not None
    for (i, g), gpu in sorted(inv.mig.items()):
        if i != node:
            continue
        start = gpu.find_start(req.mig_profile)
        if start is not None:
            return Decision(node, inv.nodes[node].name, (g,), MigSlice(req.mig_profile, start))
    return None


def decision_for(inv: Inventory, req: PodRequest, node: int, share_gpu: int | None) -> Decision:
    """A decision on ``node``: the given share GPU, or the lowest free whole GPUs."""
    name = inv.nodes[node].name
    if req.gpu_count == 0:
        return Decision(node, name)
    if req.is_mig:
        found = mig_decision(inv, req, node)
        assert found is not None
        return found
    if req.is_share:
        gpu = best_fit_gpu(inv, node, req.gpu_milli) if share_gpu is None else share_gpu
        return Decision(node, name, (gpu,))
    return Decision(node, name, whole_gpu_indices(inv, node, req.gpu_count))
