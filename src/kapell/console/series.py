"""A short in-memory history of each model's traffic, for the console's plots.

The gateway (or, on a cluster, the operator's demand board) keeps cumulative counters and
gauges; a sampler reads them once a second and ``SeriesRing.record`` turns two readings into a
rate. Latencies arrive one per finished request (``add_latency``) and are summarised per
sample. Nothing is persisted: the plots show the last ``keep`` samples since the process
started, which is what a live view needs and what Prometheus is for beyond that.

Example: tokens_total 1200 at t=10 s and 1500 at t=11 s give ``tokens_per_s`` 300.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields

import numpy as np

KEEP_SAMPLES = 600
"""Ten minutes at one sample a second."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One model's cumulative counters and gauges at one moment."""

    tokens_total: float
    queue_depth: int
    in_flight: int
    ready: int
    desired: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the plots. Latencies are None when no request finished in the interval
    (a gap in the line, not a zero), or where the mode does not see latencies at all."""

    t_s: float
    tokens_per_s: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    queue_depth: int
    in_flight: int
    ready: int
    desired: int


SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least the first
    return ordered[int(rank) - 1]


class _Rows:
    """The newest ``keep`` samples of one model as rows of float arrays, oldest first when
    read: times in float64, the values in float32 (seven significant digits are more than a
    plot shows). A ``Sample`` object per point takes about five times the memory, and an
    operator with 1,000 Models keeps 120,000 points; a missing latency is stored as NaN."""

    __slots__ = ("count", "next", "rows", "times")

    def __init__(self, keep: int) -> None:
        self.times = np.empty(keep)
        self.rows = np.empty((keep, len(SAMPLE_FIELDS) - 1), dtype=np.float32)
        self.count = 0
        self.next = 0

    def append(self, sample: Sample) -> None:
        t_s, *values = astuple(sample)
        self.times[self.next] = t_s
        self.rows[self.next] = [math.nan if v is None else v for v in values]
        self.next = (self.next + 1) % len(self.rows)
        self.count = min(self.count + 1, len(self.rows))

    def samples(self) -> list[Sample]:
        start = (self.next - self.count) % len(self.rows)
        order = [(start + i) % len(self.rows) for i in range(self.count)]
        times, rows = self.times[order].tolist(), self.rows[order].tolist()
        return [_sample(t_s, row) for t_s, row in zip(times, rows, strict=True)]


def _sample(t_s: float, row: list[float]) -> Sample:
    tokens_per_s, p50, p95, queue, in_flight, ready, desired = row
    return Sample(
        t_s=t_s,
        tokens_per_s=tokens_per_s,
        latency_p50_ms=None if math.isnan(p50) else p50,
        latency_p95_ms=None if math.isnan(p95) else p95,
        queue_depth=int(queue),
        in_flight=int(in_flight),
        ready=int(ready),
        desired=int(desired),
    )


class SeriesRing:
    """Samples per model key, the newest ``keep`` of each. Thread-safe: on a cluster the
    operator samples on its controllers' loop and the console reads on its API thread."""

    def __init__(self, keep: int = KEEP_SAMPLES) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._samples: dict[str, _Rows] = {}
        self._last: dict[str, tuple[float, Reading]] = {}
        self._latencies: dict[str, list[float]] = {}

    def add_latency(self, key: str, latency_s: float) -> None:
        """A request to ``key`` finished after ``latency_s``; it counts in the next sample."""
        with self._lock:
            self._latencies.setdefault(key, []).append(latency_s)

    def record(self, key: str, now_s: float, reading: Reading) -> None:
        """Add the sample for ``now_s``; the first reading of a key only sets its baseline."""
        with self._lock:
            before = self._last.get(key)
            self._last[key] = (now_s, reading)
            latencies = self._latencies.pop(key, [])
            if before is None or now_s <= before[0]:
                return
            ring = self._samples.get(key)
            if ring is None:
                ring = self._samples[key] = _Rows(self._keep)
        grown = reading.tokens_total - before[1].tokens_total
        if grown < 0:  # the counter restarted (the model was re-created): count from zero
            grown = reading.tokens_total
        sample = Sample(
            t_s=now_s,
            tokens_per_s=grown / (now_s - before[0]),
            latency_p50_ms=percentile(latencies, 50) * 1e3 if latencies else None,
            latency_p95_ms=percentile(latencies, 95) * 1e3 if latencies else None,
            queue_depth=reading.queue_depth,
            in_flight=reading.in_flight,
            ready=reading.ready,
            desired=reading.desired,
        )
        with self._lock:
            ring.append(sample)

    def samples(self, key: str) -> list[Sample]:
        with self._lock:
            ring = self._samples.get(key)
            return [] if ring is None else ring.samples()

    def retain(self, keys: Iterable[str]) -> None:
        """Forget models that are gone, so a long-lived process does not keep them."""
        keep = set(keys)
        with self._lock:
            for table in (self._samples, self._last, self._latencies):
                for gone in [k for k in table if k not in keep]:
                    del table[gone]
