"""``kapell sim serve``: report shape, sweep semantics, determinism, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kapell.api.errors import KapellError
from kapell.bench import serving
from kapell.bench.traces import Trace, TraceRequest
from kapell.cli.main import app


def _trace() -> Trace:
    # A load step: quiet, then 3x the rate for a while, then quiet again.
    requests, t = [], 0.0
    for i in range(900):
        t += 0.5 if i < 300 or i >= 600 else 0.1
        requests.append(TraceRequest(t, 600 + 53 * (i % 7), 40 + 13 * (i % 5)))
    return Trace("step", tuple(requests))


OPTIONS = serving.ServeOptions(profile="h100-llama3-8b", max_replicas=8, warmup_s=30.0)


def test_sweep_reports_the_cheapest_setting_that_meets_the_goal() -> None:
    report, runs = serving.serve_report(_trace(), OPTIONS, ["kpa", "static"], do_sweep=True)
    for name in ("kpa", "static"):
        entry = report["autoscalers"][name]
        meeting = [p["gpu_hours"] for p in entry["sweep"] if p["slo_attainment"] >= 0.99]
        assert entry["gpu_hours_at_99"] == min(meeting)
        assert entry["timeline"] and name in runs
    static = report["autoscalers"]["static"]
    assert static["replicas"] == min(
        p["replicas"] for p in static["sweep"] if p["slo_attainment"] >= 0.99
    )
    assert set(report["ratios"]) == set()  # no kapell entry, no ratio


def test_report_is_deterministic_for_a_seed() -> None:
    a, _ = serving.serve_report(_trace(), OPTIONS, ["kapell"], do_sweep=False)
    b, _ = serving.serve_report(_trace(), OPTIONS, ["kapell"], do_sweep=False)
    assert a == b


def test_summary_counts_only_the_measured_part() -> None:
    report, _ = serving.serve_report(_trace(), OPTIONS, ["static"], do_sweep=False)
    entry = report["autoscalers"]["static"]
    assert entry["requests"] == 900 and entry["measured_from_s"] == 30.0
    assert 0.0 <= entry["slo_attainment"] <= 1.0
    assert entry["ttft_p50_s"] <= entry["ttft_p99_s"]


def test_unknown_names_are_user_errors() -> None:
    with pytest.raises(KapellError, match="expected a comma list of kapell, kpa, static"):
        serving.parse_autoscalers("kapell,hpa")
    with pytest.raises(KapellError, match="--router"):
        serving.replay(
            _trace(), serving.ServeOptions(profile="h100-llama3-8b", router="random"), "static", 1
        )


def test_cli_prints_json_and_writes_a_plot(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = [
        f"2023-11-16 18:00:{i // 4:02d}.{(i % 4) * 25:02d}00000,{500 + i},{20 + i % 9}"
        for i in range(200)
    ]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows))
    plot = tmp_path / "p.png"
    base = ["sim", "serve", "--trace", str(trace), "--profile", "a100-llama2-7b", "--autoscaler",
            "kpa,static", "--router", "round-robin", "--slo-ttft-ms", "1000", "--slo-tpot-ms",
            "100", "--json", "--warmup-s", "5"]  # fmt: skip
    result = CliRunner().invoke(app, [*base, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["autoscalers"]) == {"kpa", "static"}
    assert plot.stat().st_size > 1000
    gated = CliRunner().invoke(app, [*base, "--gate-s", "10,20"])
    assert gated.exit_code == 0, gated.output
    kept = json.loads(gated.stdout)["autoscalers"]["kpa"]["requests"]
    assert 0 < kept < report["autoscalers"]["kpa"]["requests"]
    table = CliRunner().invoke(
        app, [*base[:-3], "--autoscaler", "kapell,static", "--warmup-s", "5"]
    )
    assert table.exit_code == 0, table.output
    # The sized kapell row names the sizes the policy ran; the static row its fixed size.
    [kapell_row] = [line for line in table.stdout.splitlines() if "│ kapell" in line]
    assert "auto: " in kapell_row and "gpu" in next(
        line for line in table.stdout.splitlines() if "│ static" in line
    )
    bad = CliRunner().invoke(app, [*base, "--gate-s", "10"])
    assert isinstance(bad.exception, KapellError)
    assert "--gate-s: expected ON,OFF" in str(bad.exception)
