"""The console's sample ring: rates from cumulative counters, latency percentiles, bounds."""

from __future__ import annotations

import pytest

from kapell.console.series import Reading, SeriesRing, percentile


def reading(tokens: float, queue: int = 0) -> Reading:
    return Reading(tokens_total=tokens, queue_depth=queue, in_flight=1, ready=2, desired=3)


def test_a_rate_is_the_counter_growth_over_the_interval() -> None:
    ring = SeriesRing()
    ring.record("chat", 10.0, reading(1200))
    assert ring.samples("chat") == [], "the first reading is only a baseline"
    ring.record("chat", 11.0, reading(1500, queue=4))
    ring.record("chat", 13.0, reading(1700))
    first, second = ring.samples("chat")
    assert first.tokens_per_s == pytest.approx(300.0) and first.queue_depth == 4
    assert second.tokens_per_s == pytest.approx(100.0)
    assert (first.ready, first.desired, first.in_flight) == (2, 3, 1)


def test_a_counter_that_restarted_counts_from_zero() -> None:
    ring = SeriesRing()
    ring.record("chat", 0.0, reading(5000))
    ring.record("chat", 2.0, reading(80))  # the model was re-created
    assert ring.samples("chat")[0].tokens_per_s == pytest.approx(40.0)


def test_latencies_are_summarised_per_interval_and_missing_ones_are_gaps() -> None:
    ring = SeriesRing()
    ring.record("chat", 0.0, reading(0))
    for latency_s in (0.010, 0.020, 0.030, 0.040, 0.500):
        ring.add_latency("chat", latency_s)
    ring.record("chat", 1.0, reading(10))
    ring.record("chat", 2.0, reading(10))
    busy, idle = ring.samples("chat")
    assert busy.latency_p50_ms == pytest.approx(30.0)
    assert busy.latency_p95_ms == pytest.approx(500.0)
    assert idle.latency_p50_ms is None and idle.latency_p95_ms is None


def test_the_ring_keeps_the_newest_samples_and_forgets_models_that_are_gone() -> None:
    ring = SeriesRing(keep=3)
    for t in range(6):
        ring.record("chat", float(t), reading(t * 10.0))
        ring.record("gone", float(t), reading(0))
    assert [s.t_s for s in ring.samples("chat")] == [3.0, 4.0, 5.0]
    ring.retain(["chat"])
    assert ring.samples("gone") == [] and len(ring.samples("chat")) == 3


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
