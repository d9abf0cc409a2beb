"""``python -m kapell.engines.reference``: serve a local transformers model."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from kapell.engines.batching import add_batching_arguments
from kapell.engines.openai_server import engine_argument_parser, run_engine
from kapell.engines.reference.backend import ReferenceBackend, ReferenceOptions


def main(argv: Sequence[str] | None = None) -> int:
    parser = engine_argument_parser(
        "python -m kapell.engines.reference",
        "Serve a Hugging Face causal LM (local files only) with an OpenAI-compatible API.",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 ... (default: auto)")
    add_batching_arguments(parser, threads_help="torch CPU threads (default: torch's)")

    registry = CollectorRegistry()

    def build(args: argparse.Namespace) -> ReferenceBackend:
        options = ReferenceOptions(
            model=args.model,
            served_name=args.served_name or args.model,
            device=args.device,
            dtype=args.dtype,
            max_num_seqs=args.max_num_seqs,
            threads=args.threads,
        )
        return ReferenceBackend(options, registry)

    return run_engine(parser, build, argv, registry=registry)


if __name__ == "__main__":
    status = main()
    # The server and the worker have stopped by now; skip the interpreter's teardown of torch,
    # which takes seconds on a busy machine and delays the supervisor for nothing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
