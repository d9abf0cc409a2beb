"""``kapell bench vectors``: the embedded index's recall@10 and search latency, against exact
search measured in the same run.

The corpus is real text embedded by the ``hashembed`` engine's function (the vectors a
``hash-ngrams`` store holds): overlapping windows of ``window`` words taken every ``stride``
words of a text file. Queries are windows starting between corpus windows (held out, so no
query is a stored vector). Ground truth is exact cosine search with numpy over the same
vectors; the index is ``LanceIndex`` as the gateway uses it (IVF-PQ, ``nprobes``,
``refine_factor``), built with one ``add`` of the whole corpus.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kapell.api.errors import KapellError
from kapell.engines.hashembed.backend import embed_text
from kapell.gateway.vectors import index as vector_index
from kapell.gateway.vectors.index import Chunk, LanceIndex

K = 10
SWEEP = ((16, 2), (32, 4), (32, 10), (64, 10), (64, 30))
"""(nprobes, refine_factor) pairs searched on the same index; the gateway's setting is one."""


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    vectors: npt.NDArray[np.float32]
    queries: npt.NDArray[np.float32]


def windows(path: Path, n: int, queries: int, window: int, stride: int, seed: int) -> tuple[
    list[str], list[str]
]:  # fmt: skip
    """``n`` corpus windows and ``queries`` held-out query windows of ``path``'s words."""
    words = path.read_text().split()
    starts = range(0, len(words) - window, stride)
    if len(starts) < n:
        raise KapellError(
            f"--n {n}: {path} gives only {len(starts)} windows of {window} words every "
            f"{stride}; lower --n or --stride"
        )
    corpus = [" ".join(words[s : s + window]) for s in starts[:n]]
    between = [s + stride // 2 for s in starts[:n]] if stride > 1 else list(starts[:n])
    picked = random.Random(seed).sample(between, queries)
    return corpus, [" ".join(words[s : s + window]) for s in picked]


def embed_all(texts: list[str], dimensions: int) -> npt.NDArray[np.float32]:
    return np.array([embed_text(t, dimensions) for t in texts], dtype=np.float32)


def _percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _searched(
    index: LanceIndex,
    queries: npt.NDArray[np.float32],
    truth: list[set[int]],
    *,
    nprobes: int,
    refine_factor: int,
    exact: bool,
) -> dict[str, Any]:
    """Recall@K and latency of one search setting over every query."""
    search_s, found = [], 0
    for q, expected in zip(queries, truth, strict=True):
        t = time.perf_counter()
        hits = index.search(q, K, nprobes=nprobes, refine_factor=refine_factor, exact=exact)
        search_s.append(time.perf_counter() - t)
        found += len({h.chunk.index for h in hits} & expected)
    setting = (
        {"exact_scan": True} if exact else {"nprobes": nprobes, "refine_factor": refine_factor}
    )
    return {**setting, f"recall_at_{K}": found / (K * len(queries)), **_percentiles_ms(search_s)}


def sqlite_vec_row(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], truth: list[set[int]]
) -> dict[str, Any]:
    """The same search in sqlite-vec's ``vec0`` table (an exact scan), for the choice of the
    embedded store; loaded through ``apsw``, since Python's ``sqlite3`` may lack extension
    loading. ``{"skipped": why}`` when either is not installed."""
    try:
        import apsw  # type: ignore[import-not-found, unused-ignore]
        import sqlite_vec  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        return {"store": "sqlite-vec", "skipped": f"{exc.name} is not installed"}
    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.execute(
        f"CREATE VIRTUAL TABLE v USING vec0(e float[{vectors.shape[1]}] distance_metric=cosine)"
    )
    with db:
        db.executemany(
            "INSERT INTO v(rowid, e) VALUES (?, ?)",
            ((i, v.tobytes()) for i, v in enumerate(vectors)),
        )
    search_s, found = [], 0
    for q, expected in zip(queries, truth, strict=True):
        t = time.perf_counter()
        rows = db.execute("SELECT rowid FROM v WHERE e MATCH ? AND k = ?", (q.tobytes(), K))
        found += len({r[0] for r in rows} & expected)
        search_s.append(time.perf_counter() - t)
    db.close()
    return {"store": "sqlite-vec", "exact_scan": True, f"recall_at_{K}": found / (K * len(queries)),
            **_percentiles_ms(search_s)}  # fmt: skip


def run(
    text: Path, n: int, queries: int, dimensions: int, window: int, stride: int, seed: int
) -> dict[str, Any]:
    """The whole benchmark: embed, exact baseline, build the index, search it; JSON-ready."""
    started = time.perf_counter()
    corpus_texts, query_texts = windows(text, n, queries, window, stride, seed)
    vectors = embed_all(corpus_texts, dimensions)
    query_vectors = embed_all(query_texts, dimensions)
    embed_s = time.perf_counter() - started

    exact_s, truth = [], []
    for q in query_vectors:
        t = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        truth.append(set(top[np.argsort(-scores[top])].tolist()))
        exact_s.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory(prefix="kapell-bench-vectors-") as directory:
        index = LanceIndex(Path(directory), dimensions, "cosine")
        chunks = [Chunk("corpus", i, t) for i, t in enumerate(corpus_texts)]
        t = time.perf_counter()
        index.add(chunks, vectors)  # builds the IVF-PQ index (n >= INDEX_MIN_ROWS)
        build_s = time.perf_counter() - t
        indexed = n >= vector_index.INDEX_MIN_ROWS
        rows = [
            _searched(index, query_vectors, truth, nprobes=p, refine_factor=r, exact=False)
            for p, r in SWEEP
        ]
        rows.append(_searched(index, query_vectors, truth, nprobes=0, refine_factor=0, exact=True))
    gateway_setting = (vector_index.NPROBES, vector_index.REFINE_FACTOR)
    default = next(r for r in rows if (r.get("nprobes"), r.get("refine_factor")) == gateway_setting)
    exact = _percentiles_ms(exact_s)
    return {
        "corpus": {"text": str(text), "vectors": n, "dimensions": dimensions,
                   "window_words": window, "stride_words": stride, "queries": queries,
                   "embedding": f"hashembed hash-ngrams-{dimensions}", "seed": seed},
        "embedded": {"store": "LanceDB", "index": "IVF_PQ" if indexed else "none (exact scan)",
                     "add_and_build_s": round(build_s, 2), **default},
        "sweep": rows,
        "sqlite_vec": sqlite_vec_row(vectors, query_vectors, truth),
        "baseline_exact_numpy": exact,
        "p50_ratio_embedded_over_exact": default["p50_ms"] / exact["p50_ms"],
        "embed_s": round(embed_s, 2),
    }  # fmt: skip
