"""Power models, attribution to slices, replicas and requests, and the energy report."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapell.api.errors import NotFoundError
from kapell.policy.energy import (
    DevicePower,
    ModelUsage,
    RequestEnergy,
    carbon_g,
    default_power_models,
    energy_report,
    mig_share,
    replica_busy_power_w,
    replica_energy_j,
    request_energy_j,
)

REQUIRED_GPUS = ["H100-SXM", "H100-PCIe", "H200", "B200", "A100-SXM", "A100-PCIe", "L40S", "L4"]


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_every_required_gpu_has_a_sourced_model(name: str) -> None:
    raw = json.loads(
        resources.files("kapell.policy").joinpath("data/power_models.json").read_text("utf-8")
    )
    row = raw["gpus"][name]
    assert row["peak_source"] and row["idle_source"]
    gpu = default_power_models().gpu(name)
    assert 0 < gpu.idle_w < gpu.peak_w


@pytest.mark.parametrize(
    ("label", "canonical"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("H100-80GB", "H100-SXM"),
        ("nvidia-a100-80gb", "A100-SXM"),
        ("NVIDIA L4", "L4"),
        ("h200", "H200"),
    ],
)
def test_gpu_names_resolve_through_aliases(label: str, canonical: str) -> None:
    assert default_power_models().gpu(label).name == canonical


def test_unknown_gpu_is_a_user_error_listing_known_ones() -> None:
    with pytest.raises(NotFoundError, match=r"known: .*H100-SXM"):
        default_power_models().gpu("Voodoo5")


def test_power_is_linear_and_clamped() -> None:
    gpu = DevicePower("x", 100.0, 500.0)
    assert gpu.power_w(0.5) == 300.0
    assert gpu.power_w(-1.0) == 100.0
    assert gpu.power_w(2.0) == 500.0


def test_worked_example_of_a_mig_slice() -> None:
    h100 = default_power_models().gpu("H100-SXM")
    assert replica_energy_j(h100, mig_share(1), wall_s=700, busy_s=70) == pytest.approx(17_800)


def test_mig_share_rejects_impossible_slices() -> None:
    with pytest.raises(ValueError):
        mig_share(8)


def _partition_of_seven(sizes: list[int]) -> list[int]:
    parts: list[int] = []
    for size in sizes:
        if sum(parts) + size > 7:
            break
        parts.append(size)
    return [*parts, 7 - sum(parts)] if sum(parts) < 7 else parts


@given(
    parts=st.lists(st.integers(1, 7), max_size=7).map(_partition_of_seven),
    wall_s=st.floats(1, 1e5),
    busy_frac=st.floats(0, 1),
)
def test_slices_of_a_full_partition_add_up_to_the_gpu(
    parts: list[int], wall_s: float, busy_frac: float
) -> None:
    gpu = default_power_models().gpu("A100-SXM")
    busy_s = wall_s * busy_frac
    whole = replica_energy_j(gpu, 1.0, wall_s, busy_s)
    split = sum(replica_energy_j(gpu, mig_share(p), wall_s, busy_s) for p in parts)
    assert split == pytest.approx(whole)


@given(tokens=st.lists(st.integers(1, 10_000), min_size=1, max_size=64), power_w=st.floats(1, 2e3))
def test_requests_in_a_batch_share_its_energy_by_tokens(tokens: list[int], power_w: float) -> None:
    total = sum(tokens)
    charged = [request_energy_j(power_w, 2.0, t, total) for t in tokens]
    assert sum(charged) == pytest.approx(power_w * 2.0)
    biggest = max(range(len(tokens)), key=tokens.__getitem__)
    assert charged[biggest] == max(charged)


def test_a_request_alone_pays_the_interval_and_pue_scales() -> None:
    assert request_energy_j(300.0, 1.5, 10, 0) == 450.0
    assert request_energy_j(300.0, 1.5, 10, 10, pue=1.2) == pytest.approx(540.0)


def _usage(**over: object) -> ModelUsage:
    row: dict[str, object] = {
        "model": "qwen", "engine": "reference", "gpu_model": None, "gpu_milli": 0,
        "cpu_cores": 2.0, "replicas": 1, "replica_seconds": 100.0, "busy_seconds": 10.0,
        "requests": 4, "prompt_tokens": 300, "generated_tokens": 100,
    }  # fmt: skip
    row.update(over)
    return ModelUsage.from_json(row)


def test_cpu_replica_is_modelled_per_core() -> None:
    (row,) = energy_report([_usage()], default_power_models())
    core = default_power_models().cpu_core
    expected = 2.0 * (core.idle_w * 100.0 + (core.peak_w - core.idle_w) * 10.0)
    assert row.source == "modelled"
    assert row.energy_j == pytest.approx(expected)
    assert row.joules_per_request == pytest.approx(expected / 4)
    assert row.joules_per_1k_tokens == pytest.approx(expected * 1000 / 400)
    assert row.avg_power_w == pytest.approx(expected / 100.0)
    assert "cpu" in row.hardware


def test_a_replica_without_declared_cores_is_charged_one_core() -> None:
    (row,) = energy_report([_usage(cpu_cores=0)], default_power_models())
    (one,) = energy_report([_usage(cpu_cores=1)], default_power_models())
    assert row.energy_j == pytest.approx(one.energy_j) and "assumed" in row.hardware


def test_gpu_share_and_multi_gpu_replicas() -> None:
    models = default_power_models()
    half = energy_report([_usage(gpu_model="L4", gpu_milli=500)], models)[0].energy_j
    one = energy_report([_usage(gpu_model="L4", gpu_milli=1000)], models)[0].energy_j
    two = energy_report([_usage(gpu_model="L4", gpu_milli=2000)], models)[0].energy_j
    assert half == pytest.approx(one / 2)
    assert two == pytest.approx(2 * one)


def test_measured_energy_wins_and_pue_scales() -> None:
    usage = _usage()
    (measured,) = energy_report([usage], default_power_models(), pue=1.5, measured_j={"qwen": 1e3})
    assert measured.source == "measured"
    assert measured.energy_j == pytest.approx(1.5e3)
    with pytest.raises(ValueError):
        energy_report([usage], default_power_models(), pue=0.9)


def test_idle_model_has_no_per_request_figures() -> None:
    (row,) = energy_report([_usage(requests=0, prompt_tokens=0, generated_tokens=0)],
                           default_power_models())  # fmt: skip
    assert row.joules_per_request is None and row.joules_per_1k_tokens is None
    assert row.energy_j > 0


def test_carbon_of_one_kwh() -> None:
    assert carbon_g(3.6e6, 250.0, pue=1.2) == pytest.approx(300.0)


@settings(max_examples=50)
@given(
    requests=st.lists(
        st.tuples(st.floats(0, 100), st.floats(0.01, 50), st.integers(1, 5_000)),
        min_size=1,
        max_size=30,
    ),
    power_w=st.floats(1, 2e3),
)
def test_charges_add_up_to_the_replicas_busy_energy(
    requests: list[tuple[float, float, int]], power_w: float
) -> None:
    """Whatever the overlap, the requests pay exactly the busy power times the busy time."""
    events = sorted(
        [(start, 1, i) for i, (start, _, _) in enumerate(requests)]
        + [(start + length, 0, i) for i, (start, length, _) in enumerate(requests)]
    )  # at equal times, finishes (0) before starts (1)
    split = RequestEnergy(power_w)
    charged = 0.0
    busy_s, depth, since = 0.0, 0, 0.0
    for time_s, is_start, i in events:
        if is_start:
            split.start(i, requests[i][2], time_s)
            since = time_s if depth == 0 else since
            depth += 1
        else:
            charged += split.finish(i, time_s)
            depth -= 1
            busy_s += time_s - since if depth == 0 else 0.0
    assert charged == pytest.approx(power_w * busy_s, rel=1e-9, abs=1e-9)


def test_overlapping_requests_split_by_token_weight_and_a_lone_one_pays_all() -> None:
    split = RequestEnergy(100.0)
    split.start(1, 300, 0.0)  # alone for 1 s: 100 J
    split.start(2, 100, 1.0)  # together for 2 s: 3/4 and 1/4 of 200 J
    assert split.finish(2, 3.0) == pytest.approx(50.0)
    assert split.finish(1, 3.0) == pytest.approx(100.0 + 150.0)
    assert split.in_flight == 0


def test_busy_power_is_the_share_of_the_device_at_full_load() -> None:
    models = default_power_models()
    assert replica_busy_power_w(models, "H100", 500, 8) == pytest.approx(350.0)
    assert replica_busy_power_w(models, None, 0, 2) == pytest.approx(7.0)
    assert replica_busy_power_w(models, None, 0, 0) == pytest.approx(3.5)  # at least one core
