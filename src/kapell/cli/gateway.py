"""``kapell bench gateway``: the gateway's added latency and throughput vs direct and LiteLLM."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def bench_gateway(
    rate: Annotated[float, typer.Option(help="Fixed request rate, req/s.")] = 300.0,
    duration_s: Annotated[float, typer.Option(help="Seconds at the fixed rate.")] = 10.0,
    step_s: Annotated[float, typer.Option(help="Seconds per step of the rate ladder.")] = 3.0,
    replicas: Annotated[int, typer.Option(help="sim engine replicas.")] = 2,
    max_tokens: Annotated[int, typer.Option(help="max_tokens per request.")] = 8,
    litellm_bin: Annotated[str | None, typer.Option(help="LiteLLM proxy executable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Same load to sim replicas directly, through kapell and through LiteLLM; JSON out."""
    from rich.console import Console

    from kapell.bench.gateway import run

    console = Console(stderr=True)
    with console.status("starting servers") as status:
        result = run(rate=rate, duration_s=duration_s, step_s=step_s, replicas=replicas,
                     max_tokens=max_tokens, litellm_bin=litellm_bin,
                     progress=lambda text: status.update(text))  # fmt: skip
    typer.echo(json.dumps(result, indent=None if as_json else 2))
