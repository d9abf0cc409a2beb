"""The cluster as placement sees it: devices from the fake driver's slices, taken by placements."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kapell.api.loader import load_text
from kapell.api.model import Model
from kapell.backends.kubernetes.inventory import (
    ClusterView,
    NodeView,
    Placement,
    devices_of,
    gpu_model_name,
    request_for,
)
from kapell.devcluster.gpus import GpuPool, resource_slice
from kapell.policy.placement.mig import MigSlice
from kapell.policy.placement.policies import make_policy
from kapell.policy.placement.requests import GPU_MILLI, PodRequest


def _model(gpu: str) -> Model:
    text = f"""
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {{name: m}}
spec:
  source: {{uri: h100-llama3-8b}}
  engine: {{name: sim}}
  resources:
    cpu: "2"
    memory: 4Gi
    gpu: {gpu}
"""
    [model] = load_text(text, "m.yaml")
    assert isinstance(model, Model)
    return model


def _cluster(*pools: str, placements: tuple[Placement, ...] = ()) -> ClusterView:
    slices = {}
    nodes = []
    for index, text in enumerate(pools):
        raw = resource_slice(index, GpuPool.parse(text))
        slices[raw["spec"]["nodeName"]] = devices_of(raw["spec"])
        nodes.append(NodeView(raw["spec"]["nodeName"], 96_000, 1024 * 1024, True))
    return ClusterView(nodes, slices, placements, [])


@pytest.mark.parametrize(
    ("product", "memory_mib", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA H200", 143771, "H200-140GB"),
        ("NVIDIA L4", 23034, "L4-22GB"),
    ],
)
def test_product_names_become_placement_model_names(
    product: str, memory_mib: int, expected: str
) -> None:
    assert gpu_model_name(product, memory_mib) == expected


def test_whole_gpus_and_mig_instances_are_read_from_the_fake_drivers_slices() -> None:
    view = _cluster("h100:8", "a100:2:1g.10gb")
    inv = view.inventory
    assert inv.models == ["A100-80GB", "H100-80GB"]
    assert list(inv.gpu_count) == [8, 2]
    assert set(inv.mig) == {(1, 0), (1, 1)}
    layout = inv.mig[(1, 0)].layout
    assert [s.start for s in layout] == list(range(7))
    assert {s.profile for s in layout} == {"1g.10gb"}


def test_a_mig_request_fits_only_a_profile_the_gpu_publishes() -> None:
    view = _cluster("a100:2:1g.10gb")
    policy = make_policy("best-fit")
    rng = np.random.default_rng(0)
    small = request_for(_model("{migProfile: 1g.10gb}"), "a", view.inventory.models)
    large = request_for(_model("{migProfile: 3g.40gb}"), "b", view.inventory.models)
    assert policy.select(view.inventory, small, rng) is not None
    assert policy.select(view.inventory, large, rng) is None  # no 3g.40gb instance exists


def test_placements_take_their_devices_and_fourteen_slices_fill_two_gpus() -> None:
    view = _cluster("a100:2:1g.10gb")
    policy = make_policy("best-fit")
    rng = np.random.default_rng(0)
    taken = []
    for i in range(14):
        request = request_for(_model("{migProfile: 1g.10gb}"), f"p{i}", view.inventory.models)
        decision = policy.select(view.inventory, request, rng)
        assert decision is not None and decision.mig_slice is not None
        placement = Placement(request, decision.node, decision.gpu_indices, decision.mig_slice)
        assert view.take(placement)
        taken.append((decision.gpu_indices[0], decision.mig_slice.start))
    assert len(set(taken)) == 14
    last = request_for(_model("{migProfile: 1g.10gb}"), "p14", view.inventory.models)
    assert policy.select(view.inventory, last, rng) is None


def test_a_rebuilt_view_counts_what_the_annotations_say_was_placed() -> None:
    request = PodRequest("", 2000, 4096, 8, GPU_MILLI)
    placed = Placement(request, "gpu-node-0000", tuple(range(8)))
    encoded = Placement.from_json(placed.to_json())
    assert encoded == placed
    # Pods of one shape share their request and GPU tuples (10,000 pods keep a handful).
    again = Placement.from_json(replace(placed, node="gpu-node-0001").to_json())
    assert again.request is encoded.request and again.gpus is encoded.gpus
    view = _cluster("h100:8", "h100:8", placements=(encoded,))
    assert list(view.inventory.gpu_left[0]) == [0] * 8
    assert list(view.inventory.gpu_left[1]) == [GPU_MILLI] * 8


def test_the_spec_gpu_model_matches_by_prefix_and_an_absent_model_cannot_fit() -> None:
    view = _cluster("h100:8", "a100:4")
    request = request_for(_model("{count: 1, models: [A100]}"), "a", view.inventory.models)
    assert request.gpu_models == frozenset({"A100-80GB"})
    missing = request_for(_model("{count: 1, models: [B200]}"), "b", view.inventory.models)
    rng = np.random.default_rng(0)
    assert make_policy("best-fit").select(view.inventory, missing, rng) is None


def test_share_and_device_lookup() -> None:
    view = _cluster("h100:2")
    request = request_for(_model("{milli: 300, sharing: mps}"), "s", view.inventory.models)
    assert (request.gpu_count, request.gpu_milli, request.sharing) == (1, 300, "mps")
    device = view.device("gpu-node-0000", 1, None)
    assert device is not None and device.name == "gpu-1" and device.uuid.startswith("GPU-")
    mig_view = _cluster("a100:1:1g.10gb")
    mig = mig_view.device("gpu-node-0000", 0, MigSlice("1g.10gb", 3))
    assert mig is not None and mig.name.startswith("gpu-0-mig-") and mig.uuid.startswith("MIG-")


def test_a_node_selector_keeps_replicas_on_matching_nodes() -> None:
    slices = {}
    nodes = []
    for index in range(3):
        raw = resource_slice(index, GpuPool.parse("h100:8"))
        name = raw["spec"]["nodeName"]
        slices[name] = devices_of(raw["spec"])
        labels = (("kapell.dev/serving-node", "true"),) if index == 2 else ()
        nodes.append(NodeView(name, 96_000, 1024 * 1024, True, labels))
    view = ClusterView(nodes, slices, (), [])
    model = _model("{count: 1}").model_copy(
        update={
            "spec": _model("{count: 1}").spec.model_copy(
                update={"node_selector": {"kapell.dev/serving-node": "true"}}
            )
        }
    )
    request = request_for(model, "a", view.inventory.models)
    rng = np.random.default_rng(0)
    for _ in range(8):
        decision = make_policy("best-fit").select(view.inventory, request, rng)
        assert decision is not None and decision.node == nodes[2].name
        assert view.take(Placement(request, decision.node, decision.gpu_indices))
    assert make_policy("best-fit").select(view.inventory, request, rng) is None
