"""``kapell bench gateway``: the gateway's added latency and throughput vs direct and LiteLLM."""

from __future__ import annotations

import json
from typing import Annotated

import typer

PHASES = ("fixed", "ladder", "overload", "cold_start")


def bench_gateway(
    rate: Annotated[float, typer.Option(help="Fixed request rate, req/s.")] = 300.0,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds per path at the rate.")] = 5,
    round_s: Annotated[float, typer.Option(help="Measured seconds per round.")] = 2.0,
    warmup_s: Annotated[float, typer.Option(help="Discarded seconds before each round.")] = 0.5,
    replicas: Annotated[int, typer.Option(help="sim engine replicas.")] = 2,
    max_tokens: Annotated[int, typer.Option(help="max_tokens per request.")] = 8,
    speedup: Annotated[
        float, typer.Option(help="sim --speedup (short upstream latency).")
    ] = 1000.0,
    cold_start_s: Annotated[float, typer.Option(help="sim cold start for scale from zero.")] = 2.0,
    phase: Annotated[
        list[str] | None, typer.Option(help=f"Phases to run (repeatable): {', '.join(PHASES)}.")
    ] = None,
    litellm: Annotated[bool, typer.Option(help="Measure LiteLLM's proxy too.")] = True,
    litellm_bin: Annotated[str | None, typer.Option(help="LiteLLM proxy executable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Same load to sim replicas directly, through kapell and through LiteLLM; JSON out."""
    from rich.console import Console

    from kapell.api.errors import KapellError
    from kapell.bench.gateway import run

    phases = tuple(phase or PHASES)
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise KapellError(f"--phase {', '.join(unknown)}: expected one of {', '.join(PHASES)}")
    console = Console(stderr=True)
    with console.status("starting servers") as status:
        result = run(rate=rate, rounds=rounds, round_s=round_s, warmup_s=warmup_s,
                     replicas=replicas, max_tokens=max_tokens, speedup=speedup,
                     cold_start_s=cold_start_s, phases=phases, litellm=litellm,
                     litellm_bin=litellm_bin, progress=lambda text: status.update(text))  # fmt: skip
    typer.echo(json.dumps(result, indent=None if as_json else 2))
