"""Measured energy: NVML (through a fake of the pynvml calls, no GPU here) and its attribution,
and the measured/modelled labels the report and ``/metrics`` carry."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kapell.api import metrics as names
from kapell.api.errors import BackendError
from kapell.observe.energy_metrics import EnergyCollector
from kapell.observe.power import (
    GpuEnergyMeter,
    kepler_model_joules,
    meter_gpus,
    owner_of,
    parent_pid,
    read_nvml,
)
from kapell.policy.energy import ModelUsage, default_power_models, energy_report


@dataclass
class _Process:
    pid: int


class FakePynvml(types.ModuleType):
    """Stands in for ``pynvml`` (nvidia-ml-py) on a machine without a GPU: two GPUs whose
    energy counters (mJ) and compute processes a test sets; the second has no counter."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.energy_mj = [1_000_000, 0]
        self.pids: list[list[int]] = [[4242], []]
        self.started = False

    def nvmlInit(self) -> None:
        self.started = True

    def nvmlShutdown(self) -> None:
        self.started = False

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H200"

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 128_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if handle == 1:
            raise self.NVMLError("not supported")
        return self.energy_mj[handle]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Process]:
        return [_Process(p) for p in self.pids[handle]]


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePynvml]:
    fake = FakePynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    yield fake
    assert not fake.started  # every read shuts NVML down again


def test_nvml_readings_carry_power_energy_and_processes(nvml: FakePynvml) -> None:
    first, second = read_nvml()
    assert (first.name, first.power_w, first.energy_j, first.pids) == ("NVIDIA H200", 128.0,
                                                                      1000.0, (4242,))  # fmt: skip
    assert second.energy_j is None and second.pids == ()


def test_gpu_joules_go_to_the_model_whose_replica_or_its_worker_runs_there(
    nvml: FakePynvml,
) -> None:
    meter = GpuEnergyMeter()
    parents = {4242: 4000, 4000: 3000}  # a vLLM-style worker under the replica process

    def owner(pid: int) -> str | None:
        return owner_of(pid, {3000: "llama"}, parents.get)

    meter.sample(read_nvml(), owner)
    assert meter.joules == {}  # the first reading is only the baseline
    nvml.energy_mj[0] += 50_000
    meter.sample(read_nvml(), owner)
    assert meter.joules == {"llama": pytest.approx(50.0)}
    nvml.energy_mj[0] += 20_000
    nvml.pids[0] = [4242, 5151]
    meter.sample(read_nvml(), lambda pid: {4242: "llama", 5151: "qwen"}[pid])
    assert meter.joules == {"llama": pytest.approx(60.0), "qwen": pytest.approx(10.0)}
    nvml.energy_mj[0] += 99_000
    nvml.pids[0] = [777]  # not ours: not attributed
    meter.sample(read_nvml(), lambda pid: None)
    assert sum(meter.joules.values()) == pytest.approx(70.0)


def test_the_sampler_feeds_the_meter_until_cancelled(nvml: FakePynvml) -> None:
    meter = GpuEnergyMeter()

    async def run() -> None:
        task = asyncio.create_task(meter_gpus(meter, lambda: {4242: "llama"}, period_s=0.01))
        await asyncio.sleep(0.05)
        nvml.energy_mj[0] += 7_000
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(run())
    assert meter.joules == {"llama": pytest.approx(7.0)}


def test_parent_pid_reads_proc_and_owner_of_stops_at_init() -> None:
    import os
    import subprocess
    import sys

    # A child of this process, so the test holds wherever it runs (an orphaned test run's
    # parent is init itself, where owner_of stops).
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert parent_pid(child.pid) == os.getpid()
        assert owner_of(child.pid, {os.getpid(): "m"}) == "m"
        assert owner_of(child.pid, {}) is None
    finally:
        child.kill()
        child.wait()


def test_without_nvml_the_reader_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    with pytest.raises(BackendError, match=r"pip install 'kapell\[nvidia\]'"):
        read_nvml()


def test_kepler_pods_add_up_per_model_by_kapells_pod_names() -> None:
    pods = {"ai/llama-3-8b-0a1b2c3d4e-0": 10.0, "ai/llama-3-8b-0a1b2c3d4e-1": 5.0,
            "ai/qwen-ffffffffff-0": 2.0, "ai/web-7d9f-abcde": 99.0}  # fmt: skip
    assert kepler_model_joules(pods, ["llama-3-8b", "qwen"]) == {"llama-3-8b": 15.0, "qwen": 2.0}


def _usage(model: str, **extra: object) -> ModelUsage:
    return ModelUsage.from_json({"model": model, "engine": "vllm", "gpu_model": "H200",
                                 "gpu_milli": 1000, "replicas": 1, "replica_seconds": 100.0,
                                 "busy_seconds": 50.0, "requests": 10, "prompt_tokens": 500,
                                 "generated_tokens": 500, **extra})  # fmt: skip


def test_metrics_and_report_label_metered_rows_measured_and_the_rest_modelled() -> None:
    rows = energy_report(
        [_usage("llama", measured_j=30_000.0), _usage("qwen")], default_power_models()
    )
    assert [(r.model, r.source) for r in rows] == [("llama", "measured"), ("qwen", "modelled")]
    assert rows[0].energy_j == 30_000.0
    assert rows[1].energy_j == pytest.approx(128 * 100 + (700 - 128) * 50)
    registry = CollectorRegistry()
    registry.register(EnergyCollector(lambda: rows))
    text = generate_latest(registry).decode()
    found = {
        (s.labels["model"], s.labels["source"]): s.value
        for f in text_string_to_metric_families(text)
        if f.name == names.MODEL_ENERGY_JOULES
        for s in f.samples
    }
    assert found == {("llama", "measured"): 30_000.0, ("qwen", "modelled"): rows[1].energy_j}
