"""Whether spot capacity is up on a cluster: what the TrainingJob scheduler's spot policy reads.

A cloud reclaims spot capacity by taking its nodes away: they go NotReady, or their Node objects
are deleted (Karpenter and cluster autoscalers delete a reclaimed node). So spot counts as up
while at least one schedulable node (Ready, not cordoned) carries the labels of a spot node
group of some GPUPool (``GPUNodeGroup.selector``: the group's ``nodeLabels``, else the
capacity-type label), the groups a RayJob's spot workers are placed on (``rayjob.node_groups``);
with no spot group in any GPUPool, any node labelled ``karpenter.sh/capacity-type=spot``.
One answer for the whole cluster, like ``kapell up --spot-availability``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from lightkube import Client

from kapell.api import GPUPool
from kapell.api.kinds import CAPACITY_TYPE_LABEL
from kapell.backends.kubernetes.informer import Informer, Key
from kapell.backends.kubernetes.inventory import NodeView
from kapell.backends.kubernetes.store import resource_body
from kapell.backends.kubernetes.training import GPUPoolResource

log = logging.getLogger(__name__)

Selector = tuple[tuple[str, str], ...]
DEFAULT_SPOT: Selector = ((CAPACITY_TYPE_LABEL, "spot"),)


def spot_selectors(raw: dict[str, Any]) -> tuple[Selector, ...]:
    """The node labels of each spot node group of one GPUPool (none for a pool kapell's
    schema refuses: logged, as the RayJob renderer does)."""
    try:
        pool = GPUPool.model_validate(resource_body(raw, "GPUPool"))
    except ValueError as exc:
        log.warning("GPUPool %s ignored: %s", raw["metadata"]["name"], exc)
        return ()
    return tuple(tuple(sorted(g.selector.items())) for g in pool.spec.nodes if g.spot)


def spot_up(nodes: Iterable[NodeView], selectors: Iterable[Selector]) -> bool:
    """Whether a schedulable node matches one of ``selectors`` (none: the default spot label)."""
    wanted = [set(s) for s in selectors] or [set(DEFAULT_SPOT)]
    return any(n.schedulable and any(s <= set(n.labels) for s in wanted) for n in nodes)


class SpotNodes:
    """``Feeds.spot_available`` on a cluster: the nodes (an informer the caller runs) and the
    GPUPools' spot groups (``pools``, an informer to start with the training plane's)."""

    def __init__(self, client: Client, nodes: Callable[[], Iterable[NodeView]]) -> None:
        self._nodes = nodes
        self.pools: Informer[tuple[Selector, ...]] = Informer(
            client, GPUPoolResource, spot_selectors, _unwatched
        )

    def __call__(self, now_s: float) -> bool:
        return spot_up(self._nodes(), [s for pool in self.pools.items() for s in pool])


def _unwatched(key: Key, view: tuple[Selector, ...] | None) -> None:
    """A GPUPool change needs no reconcile: each TrainingJob reconcile reads the pools again."""
