"""The vectorised fragmentation model against a direct reading of the FGD definition."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.policy.placement.fragmentation import FragmentationModel, PodShape, typical_shapes
from kapell.policy.placement.inventory import Inventory, NodeSpec
from kapell.policy.placement.requests import PodRequest

SHAPES = [
    (PodShape(3000, 810, 1, frozenset()), 0.3),
    (PodShape(10_000, 1000, 1, frozenset()), 0.25),
    (PodShape(5000, 1000, 2, frozenset({"T4"})), 0.2),
    (PodShape(4000, 0, 0, frozenset()), 0.25),
]


def direct(left: np.ndarray, cpu_left: int, model: str) -> float:
    """Expected idle GPU milli the next typical pod cannot use (FGD, section 4.2)."""
    total = float(left.sum())
    frag = 0.0
    for shape, freq in SHAPES:
        usable_model = not shape.gpu_models or model in shape.gpu_models
        fits = (
            shape.gpu_milli > 0
            and usable_model
            and (left >= shape.gpu_milli).sum() >= shape.gpu_count
            and cpu_left >= shape.cpu_milli
        )
        frag += freq * (float(left[left < shape.gpu_milli].sum()) if fits else total)
    return frag


@st.composite
def states(draw: st.DrawFn) -> Inventory:
    nodes = [
        NodeSpec(
            f"n{i}",
            64_000,
            1 << 20,
            draw(st.sampled_from([1, 2, 4, 8])),
            draw(st.sampled_from(["T4", "G2"])),
        )
        for i in range(draw(st.integers(1, 8)))
    ]
    inv = Inventory(nodes)
    for i, spec in enumerate(nodes):
        for g in range(spec.gpu_count):
            inv.gpu_left[i, g] = draw(st.sampled_from([0, 120, 190, 500, 810, 1000]))
        inv.cpu_left[i] = draw(st.integers(0, 64)) * 1000
    return inv


@settings(max_examples=60, deadline=None)
@given(inv=states(), milli=st.integers(1, 1000), cpu=st.integers(0, 8))
def test_model_matches_definition_before_and_after(inv: Inventory, milli: int, cpu: int) -> None:
    model = FragmentationModel(inv, SHAPES)
    names = [n.gpu_model for n in inv.nodes]
    expected = [direct(inv.gpu_left[i], int(inv.cpu_left[i]), names[i]) for i in range(len(names))]
    assert np.allclose(model.frag, expected)
    req = PodRequest("p", cpu * 1000, 0, 1, milli)
    nodes, gpus = np.nonzero(inv.gpu_left >= milli)
    after = model.after_share(nodes, gpus, req) if nodes.size else np.zeros(0)
    for j, (n, g) in enumerate(zip(nodes, gpus, strict=True)):
        left = inv.gpu_left[n].copy()
        left[g] -= milli
        assert np.isclose(after[j], direct(left, int(inv.cpu_left[n]) - cpu * 1000, names[n]))


def test_typical_shapes_cut_at_coverage_and_renormalise() -> None:
    pods = [PodRequest(f"a{i}", 1000, 0, 1, 500) for i in range(6)]
    pods += [PodRequest(f"b{i}", 2000) for i in range(3)]
    pods += [PodRequest("c", 3000, 0, 1, 1000)]
    shapes = typical_shapes(pods, coverage=0.85)
    assert [s.cpu_milli for s, _ in shapes] == [1000, 2000]
    assert np.isclose(sum(f for _, f in shapes), 1.0)
    assert len(typical_shapes(pods, coverage=1.0)) == 3
