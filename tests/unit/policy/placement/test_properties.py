"""Properties every policy must keep: no over-commit, and release undoes place exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapell.policy.placement.inventory import Decision, Inventory, NodeSpec
from kapell.policy.placement.mig import COMPUTE_SLICES, profiles_for
from kapell.policy.placement.policies import POLICY_NAMES, make_policy
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

MODELS = ("T4", "V100M32", "A100-40GB", "H100-80GB")


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeSpec]:
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
        model = draw(st.sampled_from(MODELS)) if gpus else ""
        mig: tuple[int, ...] = ()
        if model in ("A100-40GB", "H100-80GB"):
            mig = tuple(g for g in range(gpus) if draw(st.booleans()))
        nodes.append(
            NodeSpec(
                name=f"node-{i}",
                cpu_milli=draw(st.integers(1, 64)) * 1000,
                memory_mib=draw(st.integers(1, 64)) * 1024,
                gpu_count=gpus,
                gpu_model=model,
                gpu_memory_mib=16_384 if gpus else 0,
                mig_gpus=mig,
            )
        )
    return nodes


@st.composite
def requests(draw: st.DrawFn, i: int) -> PodRequest:
    kind = draw(st.sampled_from(["cpu", "share", "whole", "mig"]))
    cpu = draw(st.integers(0, 16)) * 1000
    mem = draw(st.integers(0, 16)) * 1024
    models = frozenset(draw(st.sets(st.sampled_from(MODELS), max_size=2)))
    if kind == "cpu":
        return PodRequest(f"p{i}", cpu, mem)
    if kind == "share":
        milli = draw(st.integers(1, 999))
        return PodRequest(
            f"p{i}",
            cpu,
            mem,
            1,
            milli,
            models,
            sharing=draw(st.sampled_from(["time-slicing", "mps"])),
        )
    if kind == "whole":
        return PodRequest(f"p{i}", cpu, mem, draw(st.sampled_from([1, 2, 4, 8])), GPU_MILLI, models)
    profile = draw(
        st.sampled_from(["1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "3g.40gb", "7g.80gb"])
    )
    return PodRequest(f"p{i}", cpu, mem, 1, 0, mig_profile=profile)


@st.composite
def workloads(draw: st.DrawFn) -> list[PodRequest]:
    return [draw(requests(i)) for i in range(draw(st.integers(1, 25)))]


def assert_within_capacity(inv: Inventory, placed: list[tuple[PodRequest, Decision]]) -> None:
    """Recount usage from the decisions alone, independent of the inventory's arrays."""
    n = len(inv.nodes)
    cpu = np.zeros(n, dtype=np.int64)
    mem = np.zeros(n, dtype=np.int64)
    gpu = np.zeros_like(inv.gpu_capacity)
    mig_compute: dict[tuple[int, int], int] = {}
    mig_slices: dict[tuple[int, int], list[int]] = {}
    for req, d in placed:
        cpu[d.node_index] += req.cpu_milli
        mem[d.node_index] += req.memory_mib
        spec = inv.nodes[d.node_index]
        if req.gpu_count:
            assert not req.gpu_models or spec.gpu_model in req.gpu_models
        if req.is_mig:
            assert d.mig_slice is not None
            key = (d.node_index, d.gpu_indices[0])
            assert d.gpu_indices[0] in spec.mig_gpus
            profile = profiles_for(spec.gpu_model)[d.mig_slice.profile]
            assert d.mig_slice.start in profile.starts
            mig_compute[key] = mig_compute.get(key, 0) + profile.compute_slices
            taken = mig_slices.setdefault(key, [])
            run = range(d.mig_slice.start, d.mig_slice.start + profile.memory_slices)
            assert not set(run) & set(taken), "two MIG instances share a memory slice"
            taken.extend(run)
        else:
            assert len(set(d.gpu_indices)) == req.gpu_count
            for g in d.gpu_indices:
                assert g < spec.gpu_count and g not in spec.mig_gpus
                gpu[d.node_index, g] += req.gpu_milli
    assert (cpu <= inv.cpu_capacity).all()
    assert (mem <= inv.memory_capacity).all()
    assert (gpu <= inv.gpu_capacity).all()
    assert all(c <= COMPUTE_SLICES for c in mig_compute.values())
    assert (inv.cpu_left == inv.cpu_capacity - cpu).all()
    assert (inv.gpu_left == inv.gpu_capacity - gpu).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=clusters(),
    pods=workloads(),
    policy_name=st.sampled_from(POLICY_NAMES),
    seed=st.integers(0, 99),
)
def test_no_overcommit_and_release_restores_exactly(
    nodes: list[NodeSpec], pods: list[PodRequest], policy_name: str, seed: int
) -> None:
    inv = Inventory(nodes)
    before = (inv.cpu_left.copy(), inv.memory_left.copy(), inv.gpu_left.copy())
    mig_before = {k: list(v.used) for k, v in inv.mig.items()}
    policy = make_policy(policy_name, pods)
    rng = np.random.default_rng(seed)
    placed: list[tuple[PodRequest, Decision]] = []
    for pod in pods:
        decision = policy.select(inv, pod, rng)
        if decision is not None:
            inv.place(pod, decision)
            placed.append((pod, decision))
            assert_within_capacity(inv, placed)
    for i in rng.permutation(len(placed)):
        inv.release(*placed[i])
    assert (inv.cpu_left == before[0]).all()
    assert (inv.memory_left == before[1]).all()
    assert (inv.gpu_left == before[2]).all()
    assert {k: list(v.used) for k, v in inv.mig.items()} == mig_before


@settings(max_examples=30, deadline=None)
@given(nodes=clusters(), pods=workloads(), seed=st.integers(0, 99))
def test_a_request_is_refused_only_when_nothing_fits(
    nodes: list[NodeSpec], pods: list[PodRequest], seed: int
) -> None:
    from kapell.policy.placement.fit import feasible_nodes

    inv = Inventory(nodes)
    policy = make_policy("kapell", pods)
    rng = np.random.default_rng(seed)
    for pod in pods:
        fits_somewhere = bool(feasible_nodes(inv, pod).any())
        decision = policy.select(inv, pod, rng)
        assert (decision is not None) == fits_somewhere
        if decision is not None:
            inv.place(pod, decision)
