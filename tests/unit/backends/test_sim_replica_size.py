"""Replica sizes in the twin and ``kapell sim serve``: GPU-hours are billed by GPU share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kapell.api.errors import KapellError
from kapell.bench import serving
from kapell.bench.traces import Trace, TraceRequest
from kapell.bench.twin_replay import Twin


def _trace() -> Trace:
    requests = [TraceRequest(0.4 * i, 500 + 37 * (i % 5), 30 + 7 * (i % 3)) for i in range(300)]
    return Trace("steady", tuple(requests))


def test_gpu_seconds_count_the_replica_share() -> None:
    trace = _trace()
    options = serving.ServeOptions(profile="h100-llama3-8b")
    model = serving.twin_model(options, "static", 2)

    whole_gpu = serving.resolve_size(trace, options, "static@gpu")

    def gpu_seconds(fraction: float) -> list[tuple[float, float]]:
        size = replace(whole_gpu, gpu_fraction=fraction)  # same speed, another bill
        config = serving.twin_config(trace, options, size, 2)
        return Twin(config, list(trace.requests), model).replay().gpu_seconds_by_window

    whole, sliced = gpu_seconds(1.0), gpu_seconds(3 / 7)
    assert [t for t, _ in whole] == [t for t, _ in sliced] and whole[-1][1] > 0
    for (_, w), (_, s) in zip(whole, sliced, strict=True):
        assert s == pytest.approx(w * 3 / 7)


def test_sized_labels_report_their_size_and_ratios() -> None:
    options = serving.ServeOptions(
        profile="h100-llama3-8b", warmup_s=20.0, knobs={"static": 1, "kapell": 2000.0}
    )
    labels = serving.parse_autoscalers("static@3g.40gb,static")
    report, _ = serving.serve_report(_trace(), options, labels, do_sweep=False)
    sliced, whole = report["autoscalers"]["static@3g.40gb"], report["autoscalers"]["static"]
    assert sliced["replica_size"] == "3g.40gb" and sliced["gpu_fraction"] == round(3 / 7, 4)
    assert whole["replica_size"] == "gpu" and whole["gpu_fraction"] == 1.0
    assert sliced["gpu_hours"] < whole["gpu_hours"]
    assert sliced["tpot_p50_s"] > whole["tpot_p50_s"]  # half the bandwidth: slower decode
    ratios = serving._ratios(
        {
            "kapell": {"gpu_hours_at_99": 1.0},
            "kapell@gpu": {"gpu_hours_at_99": 2.0},
            "kpa": {"gpu_hours_at_99": 4.0},
            "static@auto": {"gpu_hours_at_99": None},
        }
    )
    assert ratios == {
        "kapell_over_kpa": 0.25,
        "kapell_over_static@auto": None,
        "kapell@gpu_over_kpa": 0.5,
        "kapell@gpu_over_static@auto": None,
    }


def test_bad_sizes_are_user_errors() -> None:
    with pytest.raises(KapellError, match="expected a comma list"):
        serving.parse_autoscalers("kapell@3g.40gb,kapell@3g.40gb")
    with pytest.raises(KapellError, match="cannot hold"):
        serving.serve_report(
            _trace(), serving.ServeOptions(profile="h100-llama3-8b"), ["kapell@1g.10gb"],
            do_sweep=False,
        )  # fmt: skip
