"""Trace readers (Azure CSV, Mooncake JSONL), time scaling and slicing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapell.api.errors import NotFoundError
from kapell.bench.traces import (
    Trace,
    TraceError,
    TraceRequest,
    gate_trace,
    read_trace,
    scale_time,
    slice_trace,
)

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:16:01.0000000,10,0"""  # no trailing newline, as upstream ships it


def test_azure_csv(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text(AZURE)
    trace = read_trace(path)
    assert [r.prompt_tokens for r in trace.requests] == [374, 396, 10]
    assert trace.requests[0].arrival_s == 0.0
    assert trace.requests[1].arrival_s == pytest.approx(4.314579)
    assert trace.requests[2].output_tokens == 1  # zero generated tokens still costs one step
    assert all(r.prefix_blocks == () for r in trace.requests)


def test_mooncake_jsonl_keeps_hash_ids_as_prefix_blocks(tmp_path: Path) -> None:
    path = tmp_path / "mooncake.jsonl"
    rows = [
        {"timestamp": 1500, "input_length": 1100, "output_length": 7, "hash_ids": [5, 6, 7]},
        {"timestamp": 500, "input_length": 600, "output_length": 3, "hash_ids": [5, 9]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trace = read_trace(path)
    assert [r.arrival_s for r in trace.requests] == [0.0, 1.0]
    assert trace.requests[0].prefix_blocks == (5, 9)
    assert trace.block_tokens == 512


def test_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(AZURE.replace("396", "many"))
    with pytest.raises(TraceError, match=r"bad\.csv:3:"):
        read_trace(path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_trace(tmp_path / "absent.csv")
    odd = tmp_path / "trace.parquet"
    odd.write_text("")
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace(odd)


arrivals = st.lists(st.floats(0, 3600, allow_nan=False), min_size=1, max_size=50).map(sorted)


def _trace(times: list[float]) -> Trace:
    return Trace("t", tuple(TraceRequest(t, 10, 5) for t in times))


@given(arrivals, st.floats(0.1, 10))
def test_scale_time_multiplies_every_arrival(times: list[float], factor: float) -> None:
    scaled = scale_time(_trace(times), factor)
    assert [r.arrival_s for r in scaled.requests] == pytest.approx([t * factor for t in times])


@given(arrivals, st.floats(0, 3600), st.floats(1, 3600))
def test_slice_keeps_the_window_rebased(times: list[float], start: float, length: float) -> None:
    sliced = slice_trace(_trace(times), start, length)
    assert len(sliced.requests) == sum(start <= t < start + length for t in times)
    assert all(0 <= r.arrival_s < length for r in sliced.requests)


@given(
    st.lists(st.floats(0, 5000, allow_nan=False), max_size=60).map(sorted),
    st.floats(1, 600),
    st.floats(0, 600),
)
def test_gate_keeps_exactly_the_on_phase(times: list[float], on_s: float, off_s: float) -> None:
    gated = gate_trace(_trace(times), on_s, off_s)
    kept = [r.arrival_s for r in gated.requests]
    assert kept == [t for t in times if t % (on_s + off_s) < on_s]
    if off_s == 0:
        assert kept == times


def test_gate_rejects_a_bad_cycle() -> None:
    with pytest.raises(TraceError, match="gate"):
        gate_trace(_trace([1.0]), 0.0, 10.0)
