"""Measured power and energy: NVML on a GPU host, Kepler's Prometheus metrics on a cluster.

Measurements, when present, replace the modelled figures of ``policy.energy`` in reports (the
report labels each row "measured" or "modelled").

- NVML (``nvidia-ml-py``, the ``nvidia`` extra) gives each GPU's power now, its total energy
  counter since the driver loaded and the processes computing on it; without the package or a
  GPU the reader says so in one line. ``GpuEnergyMeter`` turns successive readings into joules
  per model: each GPU's counter increase goes to the models whose replica processes (or their
  children) compute on it, split equally when several share it.
- Kepler 0.10+ exports ``kepler_pod_cpu_joules_total`` per RAPL zone and, where it meters GPUs,
  ``kepler_pod_gpu_joules_total``, labelled ``pod_namespace`` and ``pod_name``. Only the
  ``package`` and ``dram`` zones are summed, because ``core`` and ``uncore`` lie inside
  ``package`` and ``psys`` covers the whole platform: adding them would count joules twice.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    pids: tuple[int, ...] = ()
    """Processes computing on the GPU."""


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
            try:
                pids = tuple(p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
            except pynvml.NVMLError:  # not permitted, e.g. in some containers
                pids = ()
            readings.append(
                GpuReading(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    power_w=pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # mW
                    energy_j=energy_j,
                    pids=pids,
                )
            )
        return readings
    finally:
        pynvml.nvmlShutdown()


def parent_pid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The parent of ``pid`` (Linux ``/proc``), or None when it cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None


def owner_of(
    pid: int, roots: Mapping[int, str], parent: Callable[[int], int | None] = parent_pid
) -> str | None:
    """The model whose replica process is ``pid`` or one of its ancestors (engines fork workers)."""
    seen = 0
    current: int | None = pid
    while current is not None and current > 1 and seen < 32:
        if current in roots:
            return roots[current]
        current, seen = parent(current), seen + 1
    return None


@dataclass
class GpuEnergyMeter:
    """Joules per model from successive NVML readings (the first one only sets the baseline).

    A GPU without an energy counter, or with no process of a model on it, is not attributed.
    """

    joules: dict[str, float] = field(default_factory=dict)
    _last_j: dict[int, float] = field(default_factory=dict)

    def sample(self, readings: Sequence[GpuReading], owner: Callable[[int], str | None]) -> None:
        """Charge each GPU's counter increase since the last sample to the models on it now."""
        for gpu in readings:
            if gpu.energy_j is None:
                continue
            before = self._last_j.get(gpu.index)
            self._last_j[gpu.index] = gpu.energy_j
            models = sorted({m for m in map(owner, gpu.pids) if m is not None})
            if before is None or not models:
                continue
            share = max(0.0, gpu.energy_j - before) / len(models)
            for model in models:
                self.joules[model] = self.joules.get(model, 0.0) + share


async def meter_gpus(
    meter: GpuEnergyMeter,
    roots: Callable[[], Mapping[int, str]],
    period_s: float = 5.0,
    read: Callable[[], list[GpuReading]] = read_nvml,
) -> None:
    """Sample NVML every ``period_s`` into ``meter`` until cancelled, or until NVML fails."""
    while True:
        readings = await asyncio.to_thread(read)
        meter.sample(readings, functools.partial(owner_of, roots=dict(roots())))
        await asyncio.sleep(period_s)


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


def kepler_model_joules(pod_joules: Mapping[str, float], models: Iterable[str]) -> dict[str, float]:
    """Joules per model from joules per ``namespace/pod``; kapell names a model's replica pods
    ``{model}-{revision}-{slot}`` (``backends.kubernetes.replicas``)."""
    wanted = set(models)
    joules: dict[str, float] = {}
    for key, value in pod_joules.items():
        model = key.split("/", 1)[-1].rsplit("-", 2)[0]
        if model in wanted:
            joules[model] = joules.get(model, 0.0) + value
    return joules


def scrape_kepler(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Joules per pod from a Kepler ``/metrics`` endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError(f"no Kepler metrics at {url}: {exc}") from exc
    return parse_kepler_pod_joules(text)
