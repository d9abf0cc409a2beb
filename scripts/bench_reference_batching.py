"""How much continuous batching buys the reference engine: tokens/s, one request at a time
versus N at once, against the same server process in the same run. Prints JSON.

    .venv/bin/python scripts/bench_reference_batching.py --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "examples/models/tiny-shakespeare"
PROMPTS = ["ROMEO:\n", "JULIET:\n", "HAMLET:\n", "KING RICHARD III:\n", "First Citizen:\n"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str) -> None:
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the engine did not become ready")


async def _run(url: str, requests: int, concurrency: int, max_tokens: int) -> float:
    """Tokens per second for ``requests`` completions, ``concurrency`` in flight at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client:

        async def one(i: int) -> int:
            async with limit:
                reply = await client.completions.create(
                    model="tiny",
                    prompt=PROMPTS[i % len(PROMPTS)],
                    max_tokens=max_tokens,
                    seed=i,
                )
                assert reply.usage is not None
                return reply.usage.completion_tokens

        started_s = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(requests))))
        return tokens / (time.perf_counter() - started_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "kapell.engines.reference", "--model", str(MODEL),
        "--served-name", "tiny", "--port", str(port), "--threads", str(args.threads),
        "--max-num-seqs", str(args.concurrency),
    ]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ})
    try:
        _wait_ready(url)
        asyncio.run(_run(url, 2, 1, 8))  # warm-up
        sequential = asyncio.run(_run(url, args.requests, 1, args.max_tokens))
        batched = asyncio.run(_run(url, args.requests, args.concurrency, args.max_tokens))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    report = {
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "sequential_tokens_per_s": round(sequential, 1),
        "batched_tokens_per_s": round(batched, 1),
        "speedup": round(batched / sequential, 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
