"""The gateway benchmark's arithmetic: percentiles, the sustained rule, LiteLLM's config."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from kapell.bench.gateway import MODEL, P99_LIMIT_MS, litellm_config, sustained
from kapell.bench.gateway_load import percentile


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_percentile_matches_the_median_and_bounds(values: list[float]) -> None:
    tolerance = 1e-9 * max(1.0, max(values))
    assert abs(percentile(values, 50) - statistics.median(values)) <= tolerance
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)
    assert min(values) <= percentile(values, 99) <= max(values)


def test_percentile_of_nothing_is_infinite() -> None:
    assert percentile([], 99) == float("inf")


def _result(**changes: float) -> dict[str, float]:
    return {"p99_ms": 10.0, "errors": 0, "sent": 1000, "rate": 300.0, "send_rate": 300.0,
            **changes}  # fmt: skip


def test_sustained_needs_latency_errors_and_the_rate_kept() -> None:
    assert sustained(_result())
    assert sustained(_result(p99_ms=P99_LIMIT_MS))
    assert not sustained(_result(p99_ms=P99_LIMIT_MS + 0.1))
    assert sustained(_result(errors=10))
    assert not sustained(_result(errors=11)), "more than 1% errors"
    assert not sustained(_result(send_rate=260.0)), "the generator fell behind"


def test_litellm_config_has_one_offline_deployment_per_replica() -> None:
    config = litellm_config(["http://127.0.0.1:1", "http://127.0.0.1:2"])
    bases = [entry["litellm_params"]["api_base"] for entry in config["model_list"]]
    assert bases == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert {entry["model_name"] for entry in config["model_list"]} == {MODEL}
    assert all(e["litellm_params"]["model"] == f"openai/{MODEL}" for e in config["model_list"])
    assert config["litellm_settings"]["telemetry"] is False
