"""MIG profiles, start-slot rules and the repartition plan."""

from __future__ import annotations

import pytest

from kapell.policy.placement.mig import MIG_PROFILES, MigGpu, MigSlice, repartition_plan


def test_tables_cover_a100_40_a100_80_h100_80() -> None:
    assert set(MIG_PROFILES["A100-40GB"]) == {
        "1g.5gb",
        "1g.10gb",
        "2g.10gb",
        "3g.20gb",
        "4g.20gb",
        "7g.40gb",
    }
    assert set(MIG_PROFILES["A100-80GB"]) == {
        "1g.10gb",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    }
    assert MIG_PROFILES["H100-80GB"]["3g.40gb"].starts == (0, 4)
    assert MIG_PROFILES["H100-80GB"]["1g.10gb"].starts == tuple(range(7))
    assert MIG_PROFILES["A100-40GB"]["2g.10gb"].starts == (0, 2, 4)


def test_seven_small_slices_fill_the_gpu() -> None:
    gpu = MigGpu("A100-40GB", [])
    starts = [gpu.place("1g.5gb") for _ in range(7)]
    assert [s.start for s in starts if s] == list(range(7))
    assert gpu.place("1g.5gb") is None  # compute slices exhausted


def test_start_slot_rules_block_a_bad_order() -> None:
    gpu = MigGpu("A100-80GB", [])
    assert gpu.place("3g.40gb") == MigSlice("3g.40gb", 0)
    assert gpu.place("4g.40gb") is None  # 4g may only start at slot 0
    assert gpu.place("3g.40gb") == MigSlice("3g.40gb", 4)


def test_release_frees_the_slice_for_reuse() -> None:
    gpu = MigGpu("H100-80GB", [])
    big = gpu.place("7g.80gb")
    assert big is not None and gpu.place("1g.10gb") is None
    gpu.release(big)
    assert gpu.place("1g.10gb") == MigSlice("1g.10gb", 0)


@pytest.mark.parametrize("model", ["A100-40GB", "H100-80GB"])
def test_unknown_profile_never_fits(model: str) -> None:
    assert MigGpu(model, []).find_start("9g.99gb") is None


def test_repartition_plan_places_big_profiles_first() -> None:
    plan = repartition_plan("A100-40GB", ["3g.20gb", "4g.20gb", "1g.5gb"])
    assert MigSlice("4g.20gb", 0) in plan and MigSlice("3g.20gb", 4) in plan
    assert all(s.profile != "1g.5gb" for s in plan)  # no compute left for it


def test_repartition_plan_skips_profiles_of_other_models() -> None:
    assert repartition_plan("H100-80GB", ["1g.5gb", "2g.20gb"]) == [MigSlice("2g.20gb", 0)]
