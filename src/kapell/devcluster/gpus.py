"""Fake GPU nodes and the DRA objects that describe their GPUs, as plain manifests.

The objects mimic what a real GPU node shows the cluster, so that kapell's Kubernetes side is
tested against the shapes it meets in production:

* node labels as set by NVIDIA GPU feature discovery (``nvidia.com/gpu.product`` ...), the
  well-known topology labels, and Karpenter's ``karpenter.sh/capacity-type`` for spot/on-demand;
* one ResourceSlice per node from the driver ``gpu.nvidia.com`` with the device names, attribute
  names and capacity names that NVIDIA's DRA driver publishes (``gpu-0`` with ``uuid``,
  ``productName``, ``resource.kubernetes.io/pciBusID``, ``memory`` ...; MIG devices
  ``gpu-0-mig-1g10gb-19-0`` with ``profile``, ``parentUUID``, ``multiprocessors``,
  ``memorySlice0`` ...). The names come from ``kapell.api.nvidia_dra``, which cites the
  driver's source and which kapell's claims select on too;
* the DeviceClasses ``gpu.nvidia.com`` and ``mig.nvidia.com`` with the driver's CEL selectors.

A GPU pool in MIG mode publishes only MIG devices, like a real GPU with MIG enabled. Figures in
the catalogue (memory, multiprocessors) follow NVIDIA's public spec sheets and MIG user guide,
rounded; nothing here is measured.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kapell.api import nvidia_dra as nv
from kapell.api.errors import KapellError
from kapell.api.nvidia_dra import DRIVER, GPU_CLASS, MIG_CLASS

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVING_LABEL = "kapell.dev/serving-node"  # "true" on nodes whose pods the node agent runs
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
SPOT_EVERY = 4  # every 4th node is spot capacity, the others on-demand
_DRIVER_VERSION = "580.95.5"
_CUDA_DRIVER_VERSION = "13.0.0"
_UUID_NAMESPACE = uuid.UUID("6f2b7a52-8d0e-4f57-9a61-2f1c7a3e0b11")


@dataclass(frozen=True)
class MigProfile:
    """One MIG GPU-instance profile: its NVML profile id, memory slices and engines."""

    name: str
    profile_id: int
    slices: int
    multiprocessors: int
    memory_mib: int
    copy_engines: int
    instances: int  # how many fit on one GPU (7 compute slices bound it, not memory)

    def placements(self) -> list[int]:
        """Start memory slices of the instances that fill a GPU with this profile alone."""
        return [k * self.slices for k in range(self.instances)]


@dataclass(frozen=True)
class GpuType:
    """A GPU model as the driver and feature discovery describe it."""

    key: str
    product_name: str
    architecture: str
    compute_capability: str
    memory_mib: int
    instance_type: str
    mig_profiles: tuple[MigProfile, ...] = ()

    @property
    def family(self) -> str:
        return self.architecture.split()[0].lower()


_H100_MIG = (
    MigProfile("1g.10gb", 19, 1, 16, 9856, 1, 7),
    MigProfile("2g.20gb", 14, 2, 32, 20096, 2, 3),
    MigProfile("3g.40gb", 9, 4, 60, 40320, 3, 2),
    MigProfile("7g.80gb", 0, 8, 132, 80896, 7, 1),
)
_A100_MIG = (
    MigProfile("1g.10gb", 19, 1, 14, 9728, 1, 7),
    MigProfile("2g.20gb", 14, 2, 28, 19968, 2, 3),
    MigProfile("3g.40gb", 9, 4, 42, 40192, 3, 2),
    MigProfile("7g.80gb", 0, 8, 98, 80384, 7, 1),
)
_H200_MIG = (
    MigProfile("1g.18gb", 19, 1, 16, 16384, 1, 7),
    MigProfile("7g.141gb", 0, 8, 132, 143360, 7, 1),
)
GPU_TYPES: dict[str, GpuType] = {
    t.key: t
    for t in (
        GpuType("h100", "NVIDIA H100 80GB HBM3", "Hopper", "9.0", 81559, "p5.48xlarge", _H100_MIG),
        GpuType("h200", "NVIDIA H200", "Hopper", "9.0", 143771, "p5en.48xlarge", _H200_MIG),
        GpuType(
            "a100", "NVIDIA A100-SXM4-80GB", "Ampere", "8.0", 81920, "p4de.24xlarge", _A100_MIG
        ),
        GpuType("l4", "NVIDIA L4", "Ada Lovelace", "8.9", 23034, "g6.48xlarge"),
    )
}


@dataclass(frozen=True)
class GpuPool:
    """``TYPE:COUNT[:MIGPROFILE]`` from the command line: what each node of a pool carries."""

    gpu: GpuType
    count: int
    mig: MigProfile | None = None

    @classmethod
    def parse(cls, text: str) -> GpuPool:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit() or int(parts[1]) < 1:
            raise KapellError(f"--gpus {text!r}: expected TYPE:COUNT[:MIGPROFILE], e.g. h100:8")
        gpu = GPU_TYPES.get(parts[0].lower())
        if gpu is None:
            raise KapellError(f"--gpus {text!r}: unknown GPU type; known: {', '.join(GPU_TYPES)}")
        mig = None
        if len(parts) == 3:
            by_name = {p.name: p for p in gpu.mig_profiles}
            mig = by_name.get(parts[2])
            if mig is None:
                known = ", ".join(by_name) or "none (no MIG on this type)"
                raise KapellError(f"--gpus {text!r}: MIG profile of {gpu.key}: one of {known}")
        return cls(gpu, int(parts[1]), mig)


def node_name(index: int) -> str:
    return f"gpu-node-{index:04d}"


def _device_uuid(prefix: str, *parts: object) -> str:
    return f"{prefix}-{uuid.uuid5(_UUID_NAMESPACE, '/'.join(map(str, parts)))}"


def node_manifest(index: int, pool: GpuPool, serving: bool = False) -> dict[str, Any]:
    """A Node labelled like a cloud GPU node (region, zone, spot, GPU product), managed by kwok,
    or by kapell's node agent if ``serving`` (its pods really run; label ``SERVING_LABEL``)."""
    name = node_name(index)
    region = REGIONS[index % len(REGIONS)]
    gpu = pool.gpu
    labels = {
        "type": "kapell-node-agent" if serving else "kwok",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": gpu.instance_type,
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": region + "abc"[(index // len(REGIONS)) % 3],
        "karpenter.sh/capacity-type": "spot"
        if index % SPOT_EVERY == SPOT_EVERY - 1
        else "on-demand",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu.product_name.replace(" ", "-"),
        "nvidia.com/gpu.family": gpu.family,
        "nvidia.com/gpu.count": str(pool.count),
        "nvidia.com/gpu.memory": str(gpu.memory_mib),
        "nvidia.com/mig.capable": str(bool(gpu.mig_profiles)).lower(),
        "nvidia.com/mig.config": f"all-{pool.mig.name}" if pool.mig else "all-disabled",
    }
    annotations = {"node.alpha.kubernetes.io/ttl": "0"}
    if serving:
        labels[SERVING_LABEL] = "true"
    else:
        annotations[FAKE_NODE_ANNOTATION] = "fake"
    capacity = {"cpu": "96", "memory": "1024Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def gpu_uuid(node: str, minor: int) -> str:
    """The deterministic UUID of a fake GPU (``GPU-<uuid5>``), so tests can pin it by CEL."""
    return _device_uuid("GPU", node, minor)


def _common_attributes(gpu: GpuType, minor: int) -> dict[str, Any]:
    """What a GPU and its MIG devices share: the product and the GPU's PCI placement (two GPUs
    per PCIe root complex, as on an 8-GPU HGX board)."""
    return {
        nv.PRODUCT_NAME: {"string": gpu.product_name},
        nv.BRAND: {"string": "Nvidia"},
        nv.ARCHITECTURE: {"string": gpu.architecture},
        nv.CUDA_COMPUTE_CAPABILITY: {"version": f"{gpu.compute_capability}.0"},
        nv.DRIVER_VERSION: {"version": _DRIVER_VERSION},
        nv.CUDA_DRIVER_VERSION: {"version": _CUDA_DRIVER_VERSION},
        nv.PCI_BUS_ID: {"string": f"0000:{0x18 + minor:02x}:00.0"},
        nv.PCIE_ROOT: {"string": f"pci0000:{0x10 * (minor // 2):02x}"},
    }


def gpu_device(node: str, minor: int, gpu: GpuType) -> dict[str, Any]:
    """A whole GPU, named and described as NVIDIA's driver does (``gpu-<minor>``)."""
    attributes = {
        nv.TYPE: {"string": nv.TYPE_GPU},
        nv.UUID: {"string": gpu_uuid(node, minor)},
        **_common_attributes(gpu, minor),
    }
    return {
        "name": nv.gpu_device_name(minor),
        "attributes": attributes,
        "capacity": {nv.MEMORY: {"value": f"{gpu.memory_mib}Mi"}},
    }


def mig_devices(node: str, minor: int, gpu: GpuType, profile: MigProfile) -> list[dict[str, Any]]:
    """The MIG devices of one GPU split evenly by ``profile``
    (``gpu-<minor>-mig-<profile>-<profileId>-<start>``)."""
    devices = []
    for start in profile.placements():
        counts = (
            profile.multiprocessors,  # multiprocessors
            profile.copy_engines,  # copyEngines
            profile.copy_engines,  # decoders
            0,  # encoders
            profile.copy_engines,  # jpegEngines
            1 if profile.instances == 1 else 0,  # ofaEngines
        )
        capacity: dict[str, Any] = {
            name: {"value": str(n)} for name, n in zip(nv.MIG_CAPACITIES[:-1], counts, strict=True)
        }
        capacity[nv.MEMORY] = {"value": f"{profile.memory_mib}Mi"}
        for memory_slice in range(start, start + profile.slices):
            capacity[nv.memory_slice(memory_slice)] = {"value": "1"}
        attributes = {
            nv.TYPE: {"string": nv.TYPE_MIG},
            nv.UUID: {"string": _device_uuid("MIG", node, minor, profile.name, start)},
            nv.PARENT_UUID: {"string": gpu_uuid(node, minor)},
            nv.PROFILE: {"string": profile.name},
            **_common_attributes(gpu, minor),
        }
        name = nv.mig_device_name(minor, profile.name, profile.profile_id, start)
        devices.append({"name": name, "attributes": attributes, "capacity": capacity})
    return devices


def resource_slice(index: int, pool: GpuPool) -> dict[str, Any]:
    """The one ResourceSlice the fake driver publishes for a node: a pool named after the node."""
    node = node_name(index)
    devices: list[dict[str, Any]] = []
    for minor in range(pool.count):
        if pool.mig is None:
            devices.append(gpu_device(node, minor, pool.gpu))
        else:
            devices.extend(mig_devices(node, minor, pool.gpu, pool.mig))
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-{DRIVER}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def device_classes() -> list[dict[str, Any]]:
    """The DeviceClasses NVIDIA's driver installs: whole GPUs and MIG devices."""

    def device_class(name: str, device_type: str) -> dict[str, Any]:
        expression = (
            f"device.driver == '{DRIVER}' && {nv.cel_attribute(nv.TYPE)} == '{device_type}'"
        )
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": expression}}]},
        }

    return [device_class(GPU_CLASS, nv.TYPE_GPU), device_class(MIG_CLASS, nv.TYPE_MIG)]


def plan_nodes(nodes: int, pools: list[GpuPool]) -> list[tuple[int, GpuPool]]:
    """Assign node indexes to GPU pools round-robin, so every pool gets nodes in every region."""
    if nodes < 1:
        raise KapellError(f"--nodes {nodes}: expected at least 1")
    if not pools:
        raise KapellError("--gpus: give at least one TYPE:COUNT, e.g. h100:8")
    return [(i, pools[i % len(pools)]) for i in range(nodes)]
