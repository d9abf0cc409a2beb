"""Routing choosers: least tokens, prefix affinity with bounded load, round robin."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kapell.policy.routing import (
    ReplicaLoad,
    choose,
    least_tokens,
    prefix_affinity,
    round_robin,
    text_block_hashes,
)

loads_strategy = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 50)), min_size=1, max_size=12
).map(lambda xs: [ReplicaLoad(f"r{i}", t, r) for i, (t, r) in enumerate(xs)])


@given(loads_strategy)
def test_least_tokens_picks_a_minimum(loads: list[ReplicaLoad]) -> None:
    chosen = loads[least_tokens(loads)]
    assert chosen.outstanding_tokens == min(load.outstanding_tokens for load in loads)


def test_burst_spreads_when_counts_update_at_dispatch() -> None:
    tokens = [0, 0, 0, 0]
    for _ in range(40):
        index = least_tokens([ReplicaLoad(f"r{i}", t) for i, t in enumerate(tokens)])
        tokens[index] += 100
    assert tokens == [1000, 1000, 1000, 1000]


def test_round_robin_cycles() -> None:
    assert [round_robin(3, n) for n in range(6)] == [0, 1, 2, 0, 1, 2]


def test_same_prefix_same_replica_when_load_allows() -> None:
    loads = [ReplicaLoad(f"r{i}") for i in range(5)]
    blocks = text_block_hashes("system prompt " * 100, 64)
    first = prefix_affinity(loads, blocks, request_tokens=10)
    assert all(prefix_affinity(loads, blocks, request_tokens=10) == first for _ in range(5))
    other = text_block_hashes("another prompt " * 100, 64)
    spread = {prefix_affinity(loads, text_block_hashes(f"{n} " * 300, 64), request_tokens=10)
              for n in range(50)}  # fmt: skip
    assert len(spread) == 5, "distinct prefixes should use every replica"
    assert prefix_affinity(loads, other, request_tokens=10) in range(5)


@given(loads_strategy, st.binary(min_size=1, max_size=16), st.integers(1, 2000))
def test_prefix_affinity_respects_the_load_bound(
    loads: list[ReplicaLoad], prefix: bytes, request_tokens: int
) -> None:
    chosen = loads[prefix_affinity(loads, [prefix], request_tokens=request_tokens)]
    total = sum(load.outstanding_tokens for load in loads) + request_tokens
    limit = max(1.25 * total / len(loads), request_tokens)
    fits = [load for load in loads if load.outstanding_tokens + request_tokens <= limit]
    if fits:
        assert chosen.outstanding_tokens + request_tokens <= limit
    else:
        assert chosen == loads[least_tokens(loads)]


def test_hot_prefix_spills_instead_of_overloading_one_replica() -> None:
    tokens = [0, 0, 0, 0]
    blocks = text_block_hashes("the same system prompt " * 50, 64)
    for _ in range(400):
        loads = [ReplicaLoad(f"r{i}", t) for i, t in enumerate(tokens)]
        tokens[prefix_affinity(loads, blocks, request_tokens=100)] += 100
    mean = sum(tokens) / len(tokens)
    assert max(tokens) <= 1.25 * mean + 100


def test_removing_a_replica_moves_only_its_prefixes() -> None:
    five = [ReplicaLoad(f"r{i}") for i in range(5)]
    four = five[:4]
    prefixes = [[f"p{n}".encode()] for n in range(400)]
    before = [five[prefix_affinity(five, p, request_tokens=1)].replica_id for p in prefixes]
    after = [four[prefix_affinity(four, p, request_tokens=1)].replica_id for p in prefixes]
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    assert moved == sum(b == "r4" for b in before)


def test_block_hashes_are_chained_and_full_blocks_only() -> None:
    a = text_block_hashes("x" * 130, 64)
    b = text_block_hashes("x" * 64 + "y" * 64, 64)
    assert len(a) == 2 and a[0] == b[0] and a[1] != b[1]


@given(loads_strategy, st.integers(0, 100))
def test_choose_is_each_strategy_by_its_name(loads: list[ReplicaLoad], turn: int) -> None:
    blocks = [b"system", b"turn-1"]
    assert choose("least-tokens", loads, turn=turn) == least_tokens(loads)
    assert choose("round-robin", loads, turn=turn) == round_robin(len(loads), turn)
    assert choose(
        "prefix-affinity", loads, turn=turn, block_hashes=blocks, request_tokens=300
    ) == prefix_affinity(loads, blocks, request_tokens=300)
