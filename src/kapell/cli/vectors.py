"""``kapell bench vectors``: recall@10 and search p50/p99 of the embedded vector index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kapell.api.errors import KapellError


def bench_vectors(
    text: Annotated[
        Path,
        typer.Option(
            help="A text file whose word windows are the corpus (e.g. "
            "../shared/data/text/tinyshakespeare.txt)."
        ),
    ],
    n: Annotated[int, typer.Option(help="Vectors in the corpus.")] = 100_000,
    queries: Annotated[int, typer.Option(help="Held-out query windows.")] = 200,
    dimensions: Annotated[int, typer.Option(help="hash-ngrams dimensions.")] = 256,
    window: Annotated[int, typer.Option(help="Words per window.")] = 12,
    stride: Annotated[int, typer.Option(help="Words between window starts.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for picking the queries.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """LanceDB IVF-PQ recall@10 against exact numpy search, and p50/p99 of both, one run."""
    from kapell.bench.vectors import run

    if not text.is_file():
        raise KapellError(f"--text: {text} is not a file")
    if n < 1 or not 1 <= queries <= n or dimensions < 1 or window < 1 or stride < 1:
        raise KapellError("--n, --queries, --dimensions, --window, --stride: expected positive")
    result = run(text, n, queries, dimensions, window, stride, seed)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    embedded, exact = result["embedded"], result["baseline_exact_numpy"]
    print(
        f"{n} vectors x {dimensions}: recall@10 {embedded['recall_at_10']:.3f}; search p50 "
        f"{embedded['p50_ms']:.2f} ms p99 {embedded['p99_ms']:.2f} ms (exact numpy p50 "
        f"{exact['p50_ms']:.2f} ms p99 {exact['p99_ms']:.2f} ms); add+build "
        f"{embedded['add_and_build_s']} s"
    )
