"""``python -m kapell.engines.sim --model PROFILE --port N``: the simulated engine server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kapell.engines.openai_server import engine_argument_parser, run_engine
from kapell.engines.sim.latency import load_profile, slice_profile
from kapell.engines.sim.server import SimBackend


def _backend(args: argparse.Namespace) -> SimBackend:
    profile = load_profile(args.model)
    if args.slice is not None:  # NAME,COMPUTE_FRACTION,BANDWIDTH_FRACTION,MEMORY_GIB
        name, compute, bandwidth, memory = args.slice.split(",")
        profile = slice_profile(
            profile,
            slice_name=name,
            compute_fraction=float(compute),
            bandwidth_fraction=float(bandwidth),
            memory_gib=float(memory),
        )
    cold_start_s = profile.cold_start_s if args.cold_start_s is None else args.cold_start_s
    return SimBackend(profile, cold_start_s=cold_start_s, speedup=args.speedup)


def main(argv: Sequence[str] | None = None) -> int:
    parser = engine_argument_parser(
        "kapell.engines.sim", "OpenAI-compatible server with simulated timings (no GPU, no model)."
    )
    parser.add_argument("--cold-start-s", type=float, default=None,
                        help="seconds from launch until /health turns ready (default: the profile's)")  # fmt: skip
    parser.add_argument("--slice", default=None,
                        help="run on a GPU slice: NAME,COMPUTE_FRACTION,BANDWIDTH_FRACTION,MEMORY_GIB "
                        "(kapell passes it for a MIG-sized replica)")  # fmt: skip
    parser.add_argument("--speedup", type=float, default=1.0,
                        help="divide every modelled duration by this")  # fmt: skip
    try:
        return run_engine(parser, _backend, argv)
    except Exception as exc:  # a bad profile name: one line, exit 1
        print(f"kapell.engines.sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
