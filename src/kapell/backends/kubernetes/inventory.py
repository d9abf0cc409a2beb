"""The cluster's GPUs as kapell's placement engine sees them, read from DRA objects.

Capacity comes from the Nodes (CPU, memory) and the ResourceSlices of NVIDIA's driver (one
device per whole GPU, ``gpu-<minor>``, or per MIG instance, ``gpu-<minor>-mig-<profileId>-
<start>-<size>``: the device names the driver publishes). What is taken comes from kapell's own
pods, each carrying its request and placement in an annotation, and from claims kapell did not
make (their allocated devices count as fully used). The result is rebuilt from these facts, so an
operator that restarts sees exactly what its predecessor placed.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kapell.api import nvidia_dra as nv
from kapell.api.model import Model, Resources
from kapell.api.units import parse_quantity
from kapell.policy.placement.inventory import Decision, Inventory, NodeSpec
from kapell.policy.placement.mig import MigSlice
from kapell.policy.placement.requests import GPU_MILLI, PodRequest

DRIVER = nv.DRIVER
PLACEMENT_ANNOTATION = "kapell.dev/placement"
_MEMORY_SLICE = re.compile(r"^memorySlice(\d+)$")
_MEMORY = re.compile(r"(\d+)\s*GB", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Device:
    """One published device: a whole GPU or a MIG instance of GPU ``gpu``."""

    name: str
    gpu: int
    uuid: str
    product: str
    memory_mib: int
    mig: MigSlice | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    cpu_milli: int
    memory_mib: int
    schedulable: bool
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Placement:
    """A placed replica: what it asked and where it went (kept on the pod as an annotation)."""

    request: PodRequest
    node: str
    gpus: tuple[int, ...] = ()
    mig: MigSlice | None = None

    def to_json(self) -> str:
        r = self.request
        return json.dumps({
            "node": self.node, "gpus": list(self.gpus),
            "mig": [self.mig.profile, self.mig.start] if self.mig else None,
            "cpuMilli": r.cpu_milli, "memoryMiB": r.memory_mib, "gpuCount": r.gpu_count,
            "gpuMilli": r.gpu_milli, "migProfile": r.mig_profile, "sharing": r.sharing,
        }, separators=(",", ":"))  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Placement:
        """The placement an annotation records; its request is the shape's, named after no
        pod (``one_copy``)."""
        d = json.loads(text)
        request = PodRequest(
            "", d["cpuMilli"], d["memoryMiB"], d["gpuCount"], d["gpuMilli"],
            mig_profile=d["migProfile"], sharing=d["sharing"],
        )  # fmt: skip
        mig = MigSlice(d["mig"][0], d["mig"][1]) if d["mig"] else None
        return cls(one_copy(request), sys.intern(d["node"]), _gpus(tuple(d["gpus"])), mig)


@functools.lru_cache(maxsize=1024)
def one_copy(request: PodRequest) -> PodRequest:
    """Equal requests as one object: a Model's replicas all ask the same, and 10,000 placed
    pods keep one request per shape instead of one each."""
    return request


@functools.lru_cache(maxsize=1024)
def _gpus(indices: tuple[int, ...]) -> tuple[int, ...]:
    """One tuple per set of GPU indices (most pods hold one GPU of a node's ten)."""
    return indices


def gpu_model_name(product: str, memory_mib: int) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100-80GB``: the names placement's MIG tables use."""
    text = product.removeprefix("NVIDIA").strip()
    family = re.split(r"[\s-]", text, maxsplit=1)[0].upper()
    found = _MEMORY.search(text)
    gib = int(found.group(1)) if found else round(memory_mib / 1024)
    return f"{family}-{gib}GB" if family else text


def devices_of(slice_spec: dict[str, Any]) -> list[Device]:
    """The devices of one ResourceSlice of NVIDIA's driver.

    The GPU index is the minor in the device's name (``gpu-<minor>``, also the prefix of a MIG
    device's name), the one place the driver still shows it; a MIG instance's start is its
    lowest ``memorySlice<i>`` capacity.
    """
    out = []
    for device in slice_spec.get("devices") or []:
        attrs = device.get("attributes") or {}
        capacity = device.get("capacity") or {}
        minor = nv.minor_of(device["name"])
        if minor is None:
            continue
        product = (attrs.get(nv.PRODUCT_NAME) or {}).get("string", "")
        uuid = (attrs.get(nv.UUID) or {}).get("string", "")
        memory = capacity.get(nv.MEMORY, {}).get("value", "0")
        memory_mib = int(parse_quantity(memory) // 2**20)
        mig = None
        if (attrs.get(nv.TYPE) or {}).get("string") == nv.TYPE_MIG:
            slices = [int(m.group(1)) for c in capacity if (m := _MEMORY_SLICE.match(c))]
            profile = (attrs.get(nv.PROFILE) or {}).get("string", "")
            mig = MigSlice(profile, min(slices, default=0))
        # Names and products repeat on every node: one copy each for 10,000 devices.
        name, product = sys.intern(device["name"]), sys.intern(product)
        out.append(Device(name, minor, uuid, product, memory_mib, mig))
    return out


def request_for(model: Model, name: str, gpu_models: Iterable[str]) -> PodRequest:
    """One replica's request in the placement engine's units.

    ``gpu_models`` are the inventory's model names; the spec's ``[H100]`` matches ``H100-80GB``.
    """
    selector = tuple(sorted(model.spec.node_selector.items()))
    return request_of(model.spec.resources, name, gpu_models, selector)


def request_of(
    resources: Resources,
    name: str,
    gpu_models: Iterable[str] = (),
    selector: tuple[tuple[str, str], ...] = (),
) -> PodRequest:
    """What one pod with ``resources`` asks, in the placement engine's units."""
    cpu = int(parse_quantity(str(resources.cpu)) * 1000)
    memory = int(parse_quantity(str(resources.memory)) // (1024 * 1024))
    gpu = resources.gpu
    if gpu is None or gpu.milli_gpus == 0:
        return PodRequest(name, cpu, memory, node_selector=selector)
    wanted = [w.upper() for w in gpu.models]
    models = frozenset(m for m in gpu_models if any(m.upper().startswith(w) for w in wanted))
    if wanted and not models:
        models = frozenset(wanted)  # nothing of that kind here: the request cannot fit
    min_memory = int(parse_quantity(gpu.memory) // (1024 * 1024)) if gpu.memory else 0
    if gpu.mig_profile is not None:
        count, milli = 1, 0
    elif gpu.milli is not None:
        count, milli = 1, gpu.milli
    else:
        count, milli = gpu.count, GPU_MILLI
    return PodRequest(
        name,
        cpu,
        memory,
        count,
        milli,
        gpu_models=models,
        min_gpu_memory_mib=min_memory,
        mig_profile=gpu.mig_profile,
        sharing=gpu.sharing,
        node_selector=selector,
    )


class ClusterView:
    """Nodes, their devices, and what is taken: builds the placement ``Inventory``."""

    def __init__(
        self,
        nodes: Iterable[NodeView],
        slices: dict[str, list[Device]],
        placements: Iterable[Placement],
        foreign: Iterable[tuple[str, str]],
    ) -> None:
        node_list = [n for n in nodes if n.schedulable]
        self.devices = slices
        specs = []
        for node in node_list:
            devices = slices.get(node.name, [])
            gpus = sorted({d.gpu for d in devices})
            first = devices[0] if devices else None
            layouts: dict[int, tuple[MigSlice, ...]] = {}
            for d in devices:
                if d.mig is not None:
                    layouts[d.gpu] = (*layouts.get(d.gpu, ()), d.mig)
            whole_memory = max((d.memory_mib for d in devices if d.mig is None), default=0)
            model = gpu_model_name(first.product, whole_memory) if first else ""
            specs.append(
                NodeSpec(
                    name=node.name,
                    cpu_milli=node.cpu_milli,
                    memory_mib=node.memory_mib,
                    labels=dict(node.labels),
                    gpu_count=(max(gpus) + 1) if gpus else 0,
                    gpu_model=model,
                    gpu_memory_mib=whole_memory or max((d.memory_mib for d in devices), default=0),
                    mig_gpus=tuple(sorted(layouts)),
                    mig_layouts=layouts,
                )
            )
        self.inventory = Inventory(specs)
        for placement in placements:
            self.take(placement)
        for node_name, device_name in foreign:
            self._take_device(node_name, device_name)

    def take(self, placement: Placement) -> bool:
        """Count a placed replica; False if its node is gone or the room is no longer there."""
        index = self.inventory.index.get(placement.node)
        if index is None:
            return False
        decision = Decision(index, placement.node, placement.gpus, placement.mig)
        try:
            self.inventory.place(placement.request, decision)
        except (ValueError, KeyError):
            return False
        return True

    def release(self, placement: Placement) -> None:
        index = self.inventory.index.get(placement.node)
        if index is not None:
            decision = Decision(index, placement.node, placement.gpus, placement.mig)
            self.inventory.release(placement.request, decision)

    def _take_device(self, node: str, device_name: str) -> None:
        """A device allocated to a claim kapell did not make: nothing else may use it."""
        index = self.inventory.index.get(node)
        device = next((d for d in self.devices.get(node, []) if d.name == device_name), None)
        if index is None or device is None:
            return
        if device.mig is not None:
            gpu = self.inventory.mig.get((index, device.gpu))
            if gpu is not None and device.mig not in gpu.used:
                gpu.used.append(device.mig)
        else:
            self.inventory.gpu_left[index, device.gpu] = 0
        self.inventory.version[index] += 1

    def device(self, node: str, gpu: int, mig: MigSlice | None) -> Device | None:
        """The published device a decision names (for its uuid, which pins it in a claim)."""
        for d in self.devices.get(node, []):
            if d.gpu == gpu and d.mig == mig:
                return d
        return None
