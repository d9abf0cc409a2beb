"""``python -m kapell.engines.onnx``: serve an exported model with ONNX Runtime."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from kapell.engines.batching import add_batching_arguments
from kapell.engines.onnx.backend import OnnxBackend, OnnxOptions
from kapell.engines.openai_server import engine_argument_parser, run_engine


def main(argv: Sequence[str] | None = None) -> int:
    parser = engine_argument_parser(
        "python -m kapell.engines.onnx",
        "Serve an exported decoder (model.onnx beside its tokenizer) with ONNX Runtime on the "
        "CPU, with an OpenAI-compatible API.",
    )
    add_batching_arguments(
        parser, threads_help="ONNX Runtime intra-op threads (default: its own choice)"
    )
    registry = CollectorRegistry()

    def build(args: argparse.Namespace) -> OnnxBackend:
        options = OnnxOptions(
            model=args.model,
            served_name=args.served_name or args.model,
            max_num_seqs=args.max_num_seqs,
            threads=args.threads,
        )
        return OnnxBackend(options, registry)

    return run_engine(parser, build, argv, registry=registry)


if __name__ == "__main__":
    sys.exit(main())
