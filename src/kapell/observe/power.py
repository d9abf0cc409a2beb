"""Measured power and energy: NVML on a GPU host, Kepler's Prometheus metrics on a cluster.

Measurements, when present, replace the modelled figures of ``policy.energy`` in reports (the
report labels each row "measured" or "modelled").

- NVML (``nvidia-ml-py``, the ``nvidia`` extra) gives each GPU's power now and its total energy
  counter since the driver loaded; without the package or a GPU the reader says so in one line.
- Kepler 0.10+ exports ``kepler_pod_cpu_joules_total`` per RAPL zone and, where it meters GPUs,
  ``kepler_pod_gpu_joules_total``, labelled ``pod_namespace`` and ``pod_name``. Only the
  ``package`` and ``dram`` zones are summed, because ``core`` and ``uncore`` lie inside
  ``package`` and ``psys`` covers the whole platform: adding them would count joules twice.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from kapell.api.errors import BackendError

KEPLER_POD_METRICS = ("kepler_pod_cpu_joules_total", "kepler_pod_gpu_joules_total")
KEPLER_ZONES = frozenset({"package", "dram"})


@dataclass(frozen=True)
class GpuReading:
    """One GPU's instantaneous power and cumulative energy (None where the GPU lacks it)."""

    index: int
    name: str
    power_w: float
    energy_j: float | None


def read_nvml() -> list[GpuReading]:
    """Power and energy of every GPU NVML sees; a one-line ``BackendError`` when none can."""
    try:
        import pynvml
    except ImportError as exc:
        raise BackendError(
            "measured GPU power needs nvidia-ml-py: pip install 'kapell[nvidia]'"
        ) from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise BackendError(f"NVML could not start (no NVIDIA GPU or driver here): {exc}") from exc
    try:
        readings = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            try:
                energy_j = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ
            except pynvml.NVMLError:  # pre-Volta GPUs and some virtualised drivers
                energy_j = None
            readings.append(
                GpuReading(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    power_w=pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # mW
                    energy_j=energy_j,
                )
            )
        return readings
    finally:
        pynvml.nvmlShutdown()


def parse_kepler_pod_joules(
    text: str,
    metrics: Iterable[str] = KEPLER_POD_METRICS,
    zones: frozenset[str] = KEPLER_ZONES,
) -> dict[str, float]:
    """Joules per ``namespace/pod`` from a Prometheus text exposition of Kepler's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(metrics)
    joules: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            zone = sample.labels.get("zone")
            if zone is not None and zone not in zones:
                continue
            pod = sample.labels.get("pod_name") or sample.labels.get("pod", "")
            namespace = sample.labels.get("pod_namespace") or sample.labels.get("namespace", "")
            joules[f"{namespace}/{pod}"] += float(sample.value)
    return dict(joules)


def scrape_kepler(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Joules per pod from a Kepler ``/metrics`` endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError(f"no Kepler metrics at {url}: {exc}") from exc
    return parse_kepler_pod_joules(text)
