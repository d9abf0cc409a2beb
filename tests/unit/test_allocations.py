"""The operator's memory report: which lines hold the most traced memory."""

from __future__ import annotations

import logging
import tracemalloc

import pytest

from kapell.observe.allocations import log_top_allocations


def test_the_report_names_the_line_that_holds_the_memory(caplog: pytest.LogCaptureFixture) -> None:
    tracemalloc.start()
    try:
        held = [bytearray(1 << 20) for _ in range(4)]  # 4 MiB from one line
        with caplog.at_level(logging.WARNING):
            log_top_allocations(limit=3)
    finally:
        tracemalloc.stop()
    report = caplog.text
    assert "traced now" in report and "test_allocations.py" in report, report
    top = report.splitlines()[1]
    assert "test_allocations.py" in top and float(top.split()[0]) >= 4.0, report
    assert len(held) == 4


def test_without_tracing_it_says_how_to_turn_it_on(caplog: pytest.LogCaptureFixture) -> None:
    assert not tracemalloc.is_tracing()
    with caplog.at_level(logging.WARNING):
        log_top_allocations()
    assert "PYTHONTRACEMALLOC=1" in caplog.text
