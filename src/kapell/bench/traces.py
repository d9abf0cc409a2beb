"""Readers for public LLM request traces, and the two edits replays need: time scaling, slicing.

- Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA'24): CSV with
  ``TIMESTAMP,ContextTokens,GeneratedTokens`` and naive timestamps with 7 fractional digits.
- Mooncake FAST'25 traces (Qin et al.): JSONL with ``timestamp`` (ms), ``input_length``,
  ``output_length`` and ``hash_ids``, one id per 512-token prefix block; equal ids mean a
  reusable KV prefix, so they become the request's prefix blocks.

Arrival times are seconds from the first request of the file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TextIO

from kapell.api.errors import KapellError, NotFoundError

MOONCAKE_BLOCK_TOKENS = 512


class TraceError(KapellError):
    """A trace file is unreadable or holds a malformed row."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request: when it arrives, how long its prompt and its answer are, its prefix blocks."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival; ``block_tokens`` is the size of one prefix block."""

    name: str
    requests: tuple[TraceRequest, ...]
    block_tokens: int = MOONCAKE_BLOCK_TOKENS

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s if self.requests else 0.0


def _azure_seconds(stamp: str) -> float:
    """Seconds since 0001-01-01 of ``2023-11-16 18:15:46.6805900`` (fromisoformat rejects 7 digits)."""
    day, clock = stamp.strip().split(" ")
    hours, minutes, seconds = clock.split(":")
    return (
        date.fromisoformat(day).toordinal() * 86400.0
        + int(hours) * 3600
        + int(minutes) * 60
        + float(seconds)
    )


def read_azure_csv(path: Path) -> Trace:
    """The Azure LLM inference CSV at ``path``."""
    rows: list[tuple[float, int, int]] = []
    with open_trace(path) as f:
        reader = csv.DictReader(f)
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (
                        _azure_seconds(row["TIMESTAMP"]),
                        int(row["ContextTokens"]),
                        int(row["GeneratedTokens"]),
                    )
                )
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise TraceError(
                    f"{path}:{line}: expected TIMESTAMP,ContextTokens,GeneratedTokens ({exc})"
                ) from None
    rows.sort()
    start_s = rows[0][0] if rows else 0.0
    requests = tuple(TraceRequest(t - start_s, max(p, 1), max(o, 1)) for t, p, o in rows)
    return Trace(path.name, requests)


def read_mooncake_jsonl(path: Path) -> Trace:
    """The Mooncake JSONL trace at ``path``, with ``hash_ids`` as prefix blocks."""
    requests: list[TraceRequest] = []
    with open_trace(path) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                requests.append(
                    TraceRequest(
                        float(obj["timestamp"]) / 1e3,
                        max(int(obj["input_length"]), 1),
                        max(int(obj["output_length"]), 1),
                        tuple(int(h) for h in obj.get("hash_ids", ())),
                    )
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise TraceError(
                    f"{path}:{line}: expected a JSON object with timestamp, input_length, "
                    f"output_length, hash_ids ({exc})"
                ) from None
    requests.sort(key=lambda r: r.arrival_s)
    start_s = requests[0].arrival_s if requests else 0.0
    shifted = tuple(replace(r, arrival_s=r.arrival_s - start_s) for r in requests)
    return Trace(path.name, shifted, MOONCAKE_BLOCK_TOKENS)


def read_trace(path: Path) -> Trace:
    """A trace of either format, chosen by the file's suffix (``.csv`` or ``.jsonl``)."""
    if path.suffix == ".csv":
        return read_azure_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return read_mooncake_jsonl(path)
    raise TraceError(f"{path}: unknown trace format: expected an Azure .csv or a Mooncake .jsonl")


def scale_time(trace: Trace, factor: float) -> Trace:
    """The trace with every arrival time multiplied by ``factor`` (< 1 is faster, more load)."""
    if factor <= 0:
        raise TraceError(f"time scale must be positive, got {factor}")
    scaled = tuple(replace(r, arrival_s=r.arrival_s * factor) for r in trace.requests)
    return replace(trace, requests=scaled)


def slice_trace(trace: Trace, start_s: float, duration_s: float | None = None) -> Trace:
    """The requests arriving in ``[start_s, start_s + duration_s)``, re-based to start at 0."""
    end_s = float("inf") if duration_s is None else start_s + duration_s
    kept = tuple(
        replace(r, arrival_s=r.arrival_s - start_s)
        for r in trace.requests
        if start_s <= r.arrival_s < end_s
    )
    return replace(trace, requests=kept)


def gate_trace(trace: Trace, on_s: float, off_s: float) -> Trace:
    """Only the requests arriving in the first ``on_s`` of every ``on_s + off_s`` cycle.

    Turns a steady trace into bursts separated by idle gaps of ``off_s``, the shape where
    burst handling and scale to zero matter, while each burst keeps the trace's own mix.
    """
    if on_s <= 0 or off_s < 0:
        raise TraceError(f"gate: expected ON > 0 and OFF >= 0 seconds, got {on_s:g},{off_s:g}")
    cycle_s = on_s + off_s
    kept = tuple(r for r in trace.requests if r.arrival_s % cycle_s < on_s)
    return replace(trace, requests=kept)


def open_trace(path: Path) -> TextIO:
    """``path`` opened for reading, or a one-line error saying why it cannot be."""
    try:
        return path.open(newline="")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: trace file not found") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace ({exc.strerror})") from None
