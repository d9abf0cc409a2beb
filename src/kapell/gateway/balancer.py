"""The balancer: which ready replica of a model gets a request, from the gateway's own counts.

Per replica it keeps the tokens and requests sent and not yet finished (raised at dispatch,
before anything is awaited, so a burst spreads instead of herding) and a failure cooldown; per
model, round-robin's turn. The strategy itself is ``policy.routing.choose``. The gateway's
proxy uses it with wall-clock time, the serving twin with its virtual clock, so both route
alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from kapell.api import Model
from kapell.api.replica import Endpoint
from kapell.policy import routing

BlockHashes = Callable[[], Sequence[int | str | bytes]]
"""The request's prefix block hashes, computed only if the strategy needs them."""


@dataclass
class ReplicaCounts:
    """What this balancer has outstanding at one replica (mutated at dispatch and finish)."""

    tokens: int = 0
    requests: int = 0
    cooldown_until_s: float = 0.0


class Balancer:
    """Chooses replicas by each Model's ``spec.routing``; one per gateway (or twin)."""

    def __init__(
        self,
        *,
        affinity_blocks: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._affinity_blocks = affinity_blocks
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._counts: dict[str, dict[str, ReplicaCounts]] = {}
        self._turns: dict[str, int] = {}
        self._cooling_until_s = 0.0
        """Latest end of any replica's failure cooldown; 0 when none is cooling."""

    def choose(
        self,
        model: Model,
        candidates: Sequence[Endpoint],
        request_tokens: int,
        block_hashes: BlockHashes,
        exclude: Collection[str] = (),
    ) -> Endpoint | None:
        """The replica for a request among ``candidates`` (None if none is left)."""
        name = model.metadata.name
        counts = self._counts.setdefault(name, {})
        if exclude:
            candidates = [e for e in candidates if e.replica_id not in exclude]
        if self._cooling_until_s > 0.0:
            candidates = self._not_cooling(candidates, counts)
        if not candidates:
            return None
        spec = model.spec.routing
        turn = self._turns.get(name, 0)
        self._turns[name] = turn + 1
        index = routing.choose(
            spec.strategy,
            [_load(e, counts) for e in candidates],
            turn=turn,
            block_hashes=block_hashes() if spec.strategy == "prefix-affinity" else (),
            request_tokens=request_tokens,
            load_bound=spec.prefix_load_bound,
            affinity_blocks=self._affinity_blocks,
        )
        return candidates[index]

    def _not_cooling(
        self, candidates: Sequence[Endpoint], counts: dict[str, ReplicaCounts]
    ) -> Sequence[Endpoint]:
        """``candidates`` without replicas in their failure cooldown (all if none is left)."""
        now_s = self._clock()
        if now_s >= self._cooling_until_s:
            self._cooling_until_s = 0.0
            return candidates
        idle = ReplicaCounts()
        cooled = [e for e in candidates if counts.get(e.replica_id, idle).cooldown_until_s <= now_s]
        return cooled or candidates

    def cool_down(self, counts: ReplicaCounts) -> None:
        """Skip a replica that just failed for the cooldown."""
        counts.cooldown_until_s = self._clock() + self._cooldown_s
        self._cooling_until_s = max(self._cooling_until_s, counts.cooldown_until_s)

    def counts(self, endpoint: Endpoint) -> ReplicaCounts:
        """The outstanding counts of ``endpoint`` (created on first use)."""
        per_model = self._counts.setdefault(endpoint.model, {})
        found = per_model.get(endpoint.replica_id)
        if found is None:
            found = per_model[endpoint.replica_id] = ReplicaCounts()
        return found


def _load(endpoint: Endpoint, counts: dict[str, ReplicaCounts]) -> routing.ReplicaLoad:
    found = counts.get(endpoint.replica_id)
    if found is None:
        return routing.ReplicaLoad(endpoint.replica_id)
    return routing.ReplicaLoad(endpoint.replica_id, found.tokens, found.requests)
