"""Replica sizes in the twin and ``kapell sim serve``: GPU-hours are billed by GPU share."""

from __future__ import annotations

import pytest

from kapell.api.errors import KapellError
from kapell.bench import serving
from kapell.bench.traces import Trace, TraceRequest
from kapell.bench.twin_replay import Twin


def _trace() -> Trace:
    requests = [TraceRequest(0.4 * i, 500 + 37 * (i % 5), 30 + 7 * (i % 3)) for i in range(300)]
    return Trace("steady", tuple(requests))


def test_gpu_seconds_count_the_replica_share() -> None:
    # Two static replicas held all along: at every reconcile the bill is 2 x their share x the
    # time so far, for a slice as for a whole GPU.
    trace = _trace()
    options = serving.ServeOptions(profile="h100-llama3-8b")
    for size, share in (("gpu", 1.0), ("3g.40gb", 3 / 7), ("4g.40gb", 4 / 7)):
        model = serving.twin_model(options, "static", 2, size)
        config = serving.twin_config(trace, options, 2)
        run = Twin(config, list(trace.requests), model).replay()
        assert run.gpu_seconds_by_window[-1][0] > 100.0
        for t_s, gpu_s in run.gpu_seconds_by_window:
            assert gpu_s == pytest.approx(2 * share * t_s), size


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
