"""The names NVIDIA's DRA GPU driver publishes, defined once for both sides of kapell.

The Kubernetes backend selects devices by these names (``backends/kubernetes/dra.py``) and the
dev cluster's fake driver publishes them (``devcluster/gpus.py``); both import them from here,
so a claim kapell renders selects on exactly what the fake driver, and the real one, publish.

Source (facts only): github.com/NVIDIA/k8s-dra-driver-gpu (now also published as
``sigs.k8s.io/dra-driver-nvidia-gpu``), release v0.4.0 (commit 6910a2be, 2026-05-15), unchanged
at commit 22407113:

* ``cmd/gpu-kubelet-plugin/deviceinfo.go``: ``GpuInfo.Attributes`` (a whole GPU: ``type``,
  ``uuid``, ``productName``, ``brand``, ``architecture``, ``cudaComputeCapability``,
  ``driverVersion``, ``cudaDriverVersion``, the standard PCI attributes, and ``addressingMode``
  on GPUs that report one), ``GpuInfo.CanonicalName`` (``gpu-<minor>``);
* ``cmd/gpu-kubelet-plugin/mig.go``: ``CommonAttributesMig`` (a MIG device: ``type``,
  ``parentUUID``, ``profile`` and the parent's descriptive attributes; ``uuid`` is added in
  ``MigDeviceInfo.GetDevice``), ``CommonCapacitiesMig`` (``multiprocessors``, ``copyEngines``,
  ``decoders``, ``encoders``, ``jpegEngines``, ``ofaEngines``, ``memory``; ``GetDevice`` adds
  ``memorySlice<i>``), ``MigSpecTuple.ToCanonicalName`` and ``toRFC1123Compliant`` (device
  name ``gpu-<parentMinor>-mig-<profile, dots removed>-<profileId>-<placementStart>``);
* ``cmd/gpu-kubelet-plugin/types.go``: the ``type`` values ``gpu`` and ``mig``;
* ``k8s.io/dynamic-resource-allocation/deviceattribute`` (``attribute.go``): the standard names
  ``resource.kubernetes.io/pciBusID`` and ``resource.kubernetes.io/pcieRoot``;
* ``api/nvidia.com/resource/v1beta1`` (``api.go``, ``gpuconfig.go``, ``sharing.go``): the
  opaque config ``GpuConfig`` of ``resource.nvidia.com/v1beta1`` and its sharing fields.

History that matters to a selector: releases up to v25.3.x also published ``index`` and
``minor`` on a GPU and ``index``/``parentIndex`` on a MIG device. Commits 36fc80ab ("Remove GPU
index for CDI spec generation / attribute advertisement", 2025-09-25) and 50d90da0 ("Remove
minor number from advertised GPU attributes", 2025-09-30), first released in v25.8.0, removed
them. A selector on ``index`` matches no device of a current driver, so kapell pins a GPU by
``uuid`` and a MIG device by ``parentUUID`` and ``profile``. The GPU minor survives only in the
device *name*, which CEL cannot see (a device in CEL has ``driver``, ``attributes``,
``capacity`` and ``allowMultipleAllocations``), but an allocation result and a ResourceSlice
show it, which is how a GPU index is mapped to its UUID (``backends/kubernetes/dra.py``).
"""

from __future__ import annotations

import re

DRIVER = "gpu.nvidia.com"
"""The driver name; also the domain of its own (unqualified) attribute names."""
GPU_CLASS = "gpu.nvidia.com"
"""DeviceClass of whole GPUs (selects ``type == 'gpu'``)."""
MIG_CLASS = "mig.nvidia.com"
"""DeviceClass of MIG devices (selects ``type == 'mig'``)."""

CONFIG_API_VERSION = "resource.nvidia.com/v1beta1"
GPU_CONFIG_KIND = "GpuConfig"
TIME_SLICING = "TimeSlicing"
MPS = "MPS"
TIME_SLICE_INTERVALS = ("Default", "Short", "Medium", "Long")

TYPE_GPU = "gpu"
TYPE_MIG = "mig"

# Attribute names. Unqualified names live in the driver's domain; qualified ones in their own.
TYPE = "type"
UUID = "uuid"
PARENT_UUID = "parentUUID"
PROFILE = "profile"
PRODUCT_NAME = "productName"
BRAND = "brand"
ARCHITECTURE = "architecture"
CUDA_COMPUTE_CAPABILITY = "cudaComputeCapability"
DRIVER_VERSION = "driverVersion"
CUDA_DRIVER_VERSION = "cudaDriverVersion"
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"

_DESCRIPTIVE = (
    PRODUCT_NAME,
    BRAND,
    ARCHITECTURE,
    CUDA_COMPUTE_CAPABILITY,
    DRIVER_VERSION,
    CUDA_DRIVER_VERSION,
    PCI_BUS_ID,
    PCIE_ROOT,
)
GPU_ATTRIBUTES = (TYPE, UUID, *_DESCRIPTIVE)
"""What a whole GPU publishes (``addressingMode`` too on GPUs that report one; not modelled)."""
MIG_ATTRIBUTES = (TYPE, UUID, PARENT_UUID, PROFILE, *_DESCRIPTIVE)
"""What a MIG device publishes (the PCI attributes are its parent GPU's)."""

# Capacity names.
MEMORY = "memory"
MIG_CAPACITIES = (
    "multiprocessors",
    "copyEngines",
    "decoders",
    "encoders",
    "jpegEngines",
    "ofaEngines",
    MEMORY,
)
"""A MIG device's capacities besides ``memorySlice<i>`` (one per memory slice it holds)."""


def memory_slice(index: int) -> str:
    return f"memorySlice{index}"


def gpu_device_name(minor: int) -> str:
    """``gpu-<minor>``, the name of a whole GPU in a ResourceSlice."""
    return f"gpu-{minor}"


def mig_device_name(parent_minor: int, profile: str, profile_id: int, start: int) -> str:
    """``gpu-<parentMinor>-mig-<profile>-<profileId>-<placementStart>``, dots removed from the
    profile and anything else outside ``[a-z0-9-.]`` turned into ``-`` (``1g.10gb+me`` ->
    ``1g10gb-me``)."""
    name = re.sub(r"[^a-z0-9-.]", "-", profile.replace(".", "").lower()).strip("-")
    return f"gpu-{parent_minor}-mig-{name}-{profile_id}-{start}"


_MINOR = re.compile(r"gpu-(\d+)(?:-mig-.*)?")


def minor_of(device_name: str) -> int | None:
    """The GPU minor (the parent's, for a MIG device) in a device name; None for other names."""
    match = _MINOR.fullmatch(device_name)
    return int(match.group(1)) if match else None


def cel_attribute(name: str) -> str:
    """The CEL reference to a device attribute, e.g. ``device.attributes['gpu.nvidia.com'].uuid``
    or ``device.attributes['resource.kubernetes.io'].pciBusID``."""
    domain, _, ident = name.rpartition("/")
    return f"device.attributes['{domain or DRIVER}'].{ident}"
