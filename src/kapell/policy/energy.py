"""Energy accounting: how many joules a replica, a model and a request used.

Power is modelled per device as ``idle_w + (peak_w - idle_w) * utilisation`` (linear between
idle and peak, the shape Kepler's and Cloud Carbon Footprint's estimators also use); the numbers
live in ``policy/data/power_models.json`` with a source for each. A replica's share of a device
is its ``gpu_milli / 1000`` (a MIG slice is ``compute_slices / 7``, a time-sliced share is its
fraction of the device), so idle power is paid by whoever holds the device. Requests split the
energy of the interval they were served in by their share of the tokens processed in it, which
is how batched decoding shares a GPU. PUE multiplies everything at the end.

Everything here is arithmetic on plain numbers; the one file read is the bundled data file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from kapell.api.errors import NotFoundError

MIG_COMPUTE_SLICES = 7


@dataclass(frozen=True)
class DevicePower:
    """Idle and peak power of one device (a GPU, or one CPU core)."""

    name: str
    idle_w: float
    peak_w: float

    def power_w(self, utilisation: float) -> float:
        """Power at ``utilisation`` in [0, 1] (clamped)."""
        u = min(1.0, max(0.0, utilisation))
        return self.idle_w + (self.peak_w - self.idle_w) * u


@dataclass(frozen=True)
class PowerModels:
    """GPU power by canonical name (aliases resolved) and the per-core CPU model."""

    gpus: Mapping[str, DevicePower]
    aliases: Mapping[str, str]
    cpu_core: DevicePower

    def gpu(self, model: str) -> DevicePower:
        """The power model of GPU ``model``; accepts aliases and vendor prefixes, any case."""
        key = _normalise(model)
        name = self.aliases.get(key)
        if name is None:
            known = ", ".join(sorted(self.gpus))
            raise NotFoundError(f"no power model for GPU {model!r}; known: {known}")
        return self.gpus[name]


def _normalise(name: str) -> str:
    text = name.strip().upper().replace("_", "-").replace(" ", "-")
    for prefix in ("NVIDIA-", "TESLA-"):
        text = text.removeprefix(prefix)
    return text


def parse_power_models(document: Mapping[str, object]) -> PowerModels:
    """Power models from the JSON document's structure (see ``data/power_models.json``)."""
    gpus: dict[str, DevicePower] = {}
    aliases: dict[str, str] = {}
    raw_gpus = document["gpus"]
    assert isinstance(raw_gpus, Mapping)
    for name, row in raw_gpus.items():
        gpus[name] = DevicePower(name, float(row["idle_w"]), float(row["peak_w"]))
        for alias in [name, *row.get("aliases", [])]:
            aliases[_normalise(alias)] = name
    cpu = document["cpu"]
    assert isinstance(cpu, Mapping)
    core = DevicePower("cpu-core", float(cpu["idle_w_per_core"]), float(cpu["active_w_per_core"]))
    return PowerModels(gpus, aliases, core)


@cache
def default_power_models() -> PowerModels:
    """The bundled power models (loaded once)."""
    text = resources.files("kapell.policy").joinpath("data/power_models.json").read_text("utf-8")
    return parse_power_models(json.loads(text))


def mig_share(compute_slices: int) -> float:
    """Fraction of a GPU a MIG instance with ``compute_slices`` of 7 is charged for."""
    if not 1 <= compute_slices <= MIG_COMPUTE_SLICES:
        raise ValueError(f"compute_slices must be 1..{MIG_COMPUTE_SLICES}, got {compute_slices}")
    return compute_slices / MIG_COMPUTE_SLICES


def replica_energy_j(
    device: DevicePower,
    share: float,
    wall_s: float,
    busy_s: float,
    busy_utilisation: float = 1.0,
) -> float:
    """Joules of one replica holding ``share`` of ``device`` for ``wall_s``, busy for ``busy_s``.

    Idle power is paid for the whole time held; the dynamic part only while busy. Example: a
    1g MIG slice (share 1/7) of an H100 SXM (120 W idle, 700 W peak) held 700 s, busy 70 s:
    1/7 * (120 * 700 + 580 * 70) = 17,800 J.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    busy = min(busy_s, wall_s)
    dynamic_w = device.power_w(busy_utilisation) - device.idle_w
    return share * (device.idle_w * wall_s + dynamic_w * busy)


def request_energy_j(
    replica_power_w: float,
    interval_s: float,
    request_tokens: int,
    interval_tokens: int,
    pue: float = 1.0,
) -> float:
    """Joules to charge one request: its token share of the replica's energy over an interval.

    ``interval_s`` is the time the request was in flight, ``interval_tokens`` all tokens (prompt
    and generated, every request in the batch) the replica processed in that interval. A request
    alone on a replica pays the whole interval; one of eight equal requests pays an eighth.
    ``RequestEnergy`` applies it to every stretch of time between two arrivals or departures.
    """
    # No token count for the interval means nothing else was metered: the request pays it all.
    share = 1.0 if interval_tokens <= 0 else min(1.0, max(0, request_tokens) / interval_tokens)
    return replica_power_w * interval_s * share * pue


def replica_busy_power_w(
    models: PowerModels, gpu_model: str | None, gpu_milli: int, cpu_cores: float
) -> float:
    """Modelled power of one replica while it serves: its share of its devices at full load."""
    if gpu_model and gpu_milli > 0:
        return models.gpu(gpu_model).peak_w * gpu_milli / 1000.0
    return models.cpu_core.peak_w * (cpu_cores if cpu_cores > 0 else 1.0)


class RequestEnergy:
    """Splits one replica's power among the requests in flight on it, stretch by stretch.

    Between two events (a request starts or finishes) the set in flight is fixed, so each of
    them pays ``request_energy_j`` for that stretch by its token weight; the charges of all
    requests add up to the replica's busy power times its busy time. The weight is what the
    gateway knows when a request starts: prompt tokens plus the tokens it may generate. Time is
    an argument (seconds on any monotonic clock).
    """

    def __init__(self, power_w: float, pue: float = 1.0) -> None:
        self.power_w = power_w
        self.pue = pue
        self._weights: dict[int, int] = {}
        self._joules: dict[int, float] = {}
        self._last_s = 0.0

    def _advance(self, now_s: float) -> None:
        interval_s = max(0.0, now_s - self._last_s)
        self._last_s = max(self._last_s, now_s)
        if not self._weights or interval_s == 0.0:
            return
        total = sum(self._weights.values())
        for key, weight in self._weights.items():
            self._joules[key] += request_energy_j(self.power_w, interval_s, weight, total, self.pue)

    def start(self, key: int, weight: int, now_s: float) -> None:
        """Request ``key`` (with ``weight`` tokens, at least 1) goes to the replica now."""
        self._advance(now_s)
        self._weights[key] = max(1, weight)
        self._joules[key] = 0.0

    def finish(self, key: int, now_s: float) -> float:
        """Request ``key`` is done: the joules it is charged."""
        self._advance(now_s)
        del self._weights[key]
        return self._joules.pop(key)

    @property
    def in_flight(self) -> int:
        return len(self._weights)


@dataclass(frozen=True)
class ModelUsage:
    """What one model's replicas did over the reporting period (the admin API's ``usage``)."""

    model: str
    engine: str
    gpu_model: str | None
    gpu_milli: int
    cpu_cores: float
    replicas: int
    replica_seconds: float
    busy_seconds: float
    requests: int
    prompt_tokens: int
    generated_tokens: int
    measured_j: float | None = None
    """Joules a meter (NVML, Kepler) read for the model over the same period, if one did."""

    @classmethod
    def from_json(cls, row: Mapping[str, object]) -> ModelUsage:
        """One row of ``GET /admin/v1/usage``'s ``models`` list."""

        def num(key: str) -> float:
            value = row.get(key, 0)
            return float(value) if isinstance(value, int | float) else 0.0

        gpu = row.get("gpu_model")
        measured = row.get("measured_j")
        return cls(
            model=str(row["model"]),
            engine=str(row.get("engine", "")),
            gpu_model=str(gpu) if gpu else None,
            gpu_milli=int(num("gpu_milli")),
            cpu_cores=num("cpu_cores"),
            replicas=int(num("replicas")),
            replica_seconds=num("replica_seconds"),
            busy_seconds=num("busy_seconds"),
            requests=int(num("requests")),
            prompt_tokens=int(num("prompt_tokens")),
            generated_tokens=int(num("generated_tokens")),
            measured_j=float(measured) if isinstance(measured, int | float) else None,
        )


@dataclass(frozen=True)
class EnergyRow:
    """One line of the energy report."""

    model: str
    engine: str
    hardware: str
    source: str  # "modelled" or "measured"
    energy_j: float
    avg_power_w: float
    joules_per_request: float | None
    joules_per_1k_tokens: float | None
    requests: int
    tokens: int


def modelled_energy_j(usage: ModelUsage, models: PowerModels) -> tuple[float, str]:
    """Modelled joules (before PUE) of one model's replicas and the hardware it assumed."""
    busy_s = min(usage.busy_seconds, usage.replica_seconds)
    if usage.gpu_model and usage.gpu_milli > 0:
        gpu = models.gpu(usage.gpu_model)
        share = usage.gpu_milli / 1000.0
        whole, part = divmod(share, 1.0)
        # A replica holding more than one GPU pays each whole GPU fully and the rest by share.
        energy = whole * replica_energy_j(gpu, 1.0, usage.replica_seconds, busy_s)
        energy += replica_energy_j(gpu, part, usage.replica_seconds, busy_s)
        return energy, f"{gpu.name} x{share:g}"
    core = models.cpu_core
    # A replica that declares no cores still runs on at least one.
    cores = usage.cpu_cores if usage.cpu_cores > 0 else 1.0
    label = f"cpu x{cores:g} cores" + ("" if usage.cpu_cores > 0 else " (assumed)")
    return cores * replica_energy_j(core, 1.0, usage.replica_seconds, busy_s), label


def energy_report(
    usages: Sequence[ModelUsage],
    models: PowerModels,
    pue: float = 1.0,
    measured_j: Mapping[str, float] | None = None,
) -> list[EnergyRow]:
    """Per-model rows: joules, average power, joules per request and per 1k tokens.

    ``measured_j`` maps a model to joules read from a meter (NVML, Kepler) over the same period
    (it overrides a usage row's own ``measured_j``); such rows are labelled "measured", the rest
    "modelled". PUE scales both.
    """
    if pue < 1.0:
        raise ValueError(f"PUE is at least 1.0, got {pue}")
    rows = []
    for usage in usages:
        modelled_j, hardware = modelled_energy_j(usage, models)
        measured = (measured_j or {}).get(usage.model, usage.measured_j)
        energy_j = (measured if measured is not None else modelled_j) * pue
        tokens = usage.prompt_tokens + usage.generated_tokens
        rows.append(
            EnergyRow(
                model=usage.model,
                engine=usage.engine,
                hardware=hardware,
                source="measured" if measured is not None else "modelled",
                energy_j=energy_j,
                avg_power_w=energy_j / usage.replica_seconds if usage.replica_seconds else 0.0,
                joules_per_request=energy_j / usage.requests if usage.requests else None,
                joules_per_1k_tokens=energy_j * 1000.0 / tokens if tokens else None,
                requests=usage.requests,
                tokens=tokens,
            )
        )
    return rows


def carbon_g(energy_j: float, intensity_g_per_kwh: float, pue: float = 1.0) -> float:
    """Grams CO2e of ``energy_j`` at a grid intensity: energy x intensity x PUE."""
    return energy_j / 3.6e6 * intensity_g_per_kwh * pue
