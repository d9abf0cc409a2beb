"""``python -m kapell.engines.hashembed --model hash-ngrams-256 --port N``: hashed embeddings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kapell.engines.hashembed.backend import HashEmbedBackend, dimensions_of
from kapell.engines.openai_server import engine_argument_parser, run_engine


def _backend(args: argparse.Namespace) -> HashEmbedBackend:
    return HashEmbedBackend(dimensions_of(args.model))


def main(argv: Sequence[str] | None = None) -> int:
    parser = engine_argument_parser(
        "kapell.engines.hashembed",
        "OpenAI-compatible /v1/embeddings of hashed word and character n-grams (not learned).",
    )
    try:
        return run_engine(parser, _backend, argv)
    except ValueError as exc:  # a bad recipe: one line, exit 1
        print(f"kapell.engines.hashembed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
