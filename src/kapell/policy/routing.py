"""Which replica serves a request: pure choosers over plain load data.

The gateway keeps, per replica, the tokens and requests it has sent and not yet seen finish,
and updates them *at dispatch time*, before awaiting anything: a burst of N requests then
spreads over replicas instead of herding onto the one that looked idle when the burst began.
A simulator calls the same functions with its own counters and trace block hashes.

Strategies (``Model.spec.routing.strategy``):

- ``least-tokens``: fewest outstanding tokens (prompt + expected generated), ties broken by
  fewest outstanding requests, then by position.
- ``prefix-affinity``: requests that share a prompt prefix go to the same replica, where its
  KV cache already holds that prefix. The prefix's leading blocks pick a point on a consistent
  hash ring of replica ids, so adding or removing a replica moves only ~1/N of the prefixes.
  Walking the ring clockwise, the first replica whose load stays within ``load_bound`` times the
  mean (counting this request) wins: "consistent hashing with bounded loads" (Mirrokni,
  Thorup, Zadimoghaddam, SODA 2018). If none qualifies, least-tokens decides.
- ``round-robin``: the baseline.

``choose`` is the one entry point: the gateway's balancer and the serving twin both call it,
so a strategy means the same thing in production and in a replay.

Everything here is deterministic: hashes are BLAKE2b, never Python's salted ``hash()``.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from kapell.api.model import RoutingStrategy

VIRTUAL_NODES_PER_REPLICA = 64
"""Ring points per replica; more points spread prefixes more evenly."""


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What the gateway has outstanding at one replica."""

    replica_id: str
    outstanding_tokens: int = 0
    outstanding_requests: int = 0


def least_tokens(loads: Sequence[ReplicaLoad]) -> int:
    """Index of the replica with the fewest outstanding tokens (then requests, then index).

    >>> least_tokens([ReplicaLoad("a", 900, 3), ReplicaLoad("b", 300, 5), ReplicaLoad("c", 300, 2)])
    2
    """
    if not loads:
        raise ValueError("no replicas to choose from")
    best = 0
    best_key = (loads[0].outstanding_tokens, loads[0].outstanding_requests)
    for i in range(1, len(loads)):
        load = loads[i]
        key = (load.outstanding_tokens, load.outstanding_requests)
        if key < best_key:
            best, best_key = i, key
    return best


def round_robin(replica_count: int, counter: int) -> int:
    """Index for the ``counter``-th request: ``counter mod replica_count``."""
    if replica_count <= 0:
        raise ValueError("no replicas to choose from")
    return counter % replica_count


def prefix_key(block_hashes: Sequence[int | str | bytes], affinity_blocks: int) -> int:
    """The ring position of a prompt whose prefix blocks hash to ``block_hashes``.

    Only the first ``affinity_blocks`` blocks count, so prompts that share a system prompt and
    a few turns land together while their tails differ. Block hashes may be chained (each one
    already identifies the prefix up to it, as in vLLM and the Mooncake traces); they are
    folded together so unchained hashes work too.
    """
    digest = hashlib.blake2b(digest_size=8)
    for block in block_hashes[: max(affinity_blocks, 1)]:
        digest.update(block if isinstance(block, bytes) else str(block).encode())
        digest.update(b"|")
    return int.from_bytes(digest.digest(), "big")


@lru_cache(maxsize=256)
def _ring(replica_ids: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted ring points and, for each, the index of its replica in ``replica_ids``."""
    points: list[tuple[int, int]] = []
    for index, replica_id in enumerate(replica_ids):
        for vnode in range(VIRTUAL_NODES_PER_REPLICA):
            digest = hashlib.blake2b(f"{replica_id}#{vnode}".encode(), digest_size=8).digest()
            points.append((int.from_bytes(digest, "big"), index))
    points.sort()
    return tuple(p for p, _ in points), tuple(i for _, i in points)


def prefix_affinity(
    loads: Sequence[ReplicaLoad],
    block_hashes: Sequence[int | str | bytes],
    *,
    request_tokens: int,
    load_bound: float = 1.25,
    affinity_blocks: int = 4,
) -> int:
    """Index of the replica for a prompt with prefix ``block_hashes``, with bounded load.

    A replica qualifies when its outstanding tokens plus ``request_tokens`` stay within
    ``load_bound`` times the mean outstanding tokens after dispatch (and at least one request's
    worth, so an idle cluster still honours affinity). An empty prefix falls back to
    least-tokens.

    Worked example: three replicas with 1000, 0 and 200 outstanding tokens, a 100-token
    request. After dispatch the mean is (1200 + 100) / 3 = 433, the bound 1.25 x 433 = 542.
    If the ring points at the first replica (1000 + 100 > 542) it is skipped and the walk
    continues clockwise to the next distinct replica that fits.
    """
    if not loads:
        raise ValueError("no replicas to choose from")
    if not block_hashes or len(loads) == 1:
        return least_tokens(loads)
    total = sum(load.outstanding_tokens for load in loads) + request_tokens
    limit = max(load_bound * total / len(loads), float(request_tokens))
    points, owners = _ring(tuple(load.replica_id for load in loads))
    start = bisect.bisect_left(points, prefix_key(block_hashes, affinity_blocks))
    seen: set[int] = set()
    for step in range(len(points)):
        index = owners[(start + step) % len(points)]
        if index in seen:
            continue
        if loads[index].outstanding_tokens + request_tokens <= limit:
            return index
        seen.add(index)
        if len(seen) == len(loads):
            break
    return least_tokens(loads)


def choose(
    strategy: RoutingStrategy,
    loads: Sequence[ReplicaLoad],
    *,
    turn: int,
    block_hashes: Sequence[int | str | bytes] = (),
    request_tokens: int = 0,
    load_bound: float = 1.25,
    affinity_blocks: int = 4,
) -> int:
    """Index of the replica ``strategy`` picks among ``loads``.

    ``turn`` counts this model's earlier requests (round-robin's position); ``block_hashes``
    are the prompt's prefix blocks (prefix-affinity's key; other strategies ignore them).
    """
    if strategy == "round-robin":
        return round_robin(len(loads), turn)
    if strategy == "prefix-affinity":
        return prefix_affinity(
            loads,
            block_hashes,
            request_tokens=request_tokens,
            load_bound=load_bound,
            affinity_blocks=affinity_blocks,
        )
    return least_tokens(loads)


def text_block_hashes(text: str, block_chars: int) -> list[bytes]:
    """Chained hashes of ``text`` cut into ``block_chars``-character blocks (full blocks only).

    The gateway has no tokenizer, so characters stand in for tokens; chaining makes each hash
    name the whole prefix up to its block, as an engine's prefix cache does.
    """
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(text) - block_chars + 1, block_chars):
        block = text[start : start + block_chars].encode()
        previous = hashlib.blake2b(previous + block, digest_size=8).digest()
        hashes.append(previous)
    return hashes
