"""The onnx engine against the reference engine on the tiny model, in the same run. Prints JSON.

For each engine: seconds from launch to ``/health`` 200, time to first token of a streamed
completion (median), tokens/s one request at a time and ``--concurrency`` at once, and what
continuous batching buys (batched over sequential, against the same server process). The
engines are measured in turns, round after round, so a noisy neighbour hurts both alike; the
report gives each median and the onnx/reference ratios.

    PYTHONPATH=src .venv/bin/python scripts/bench_engines.py      # needs the onnx and reference extras
    PYTHONPATH=src .venv/bin/python scripts/bench_engines.py --engines reference --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
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


def _start(
    engine: str, threads: int, max_num_seqs: int
) -> tuple[subprocess.Popen[bytes], str, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", f"kapell.engines.{engine}", "--model", str(MODEL),
        "--served-name", "tiny", "--port", str(port), "--threads", str(threads),
        "--max-num-seqs", str(max_num_seqs),
    ]  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen(command, env={**os.environ})
    for _ in range(3000):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return server, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"the {engine} engine did not become ready")


async def _ttft(url: str) -> float:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client:
        started = time.perf_counter()
        stream = await client.completions.create(
            model="tiny", prompt=PROMPTS[0], max_tokens=16, stream=True, temperature=0
        )
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].text:
                first = time.perf_counter() - started
        assert first is not None
        return first


async def _throughput(url: str, requests: int, concurrency: int, max_tokens: int) -> float:
    """Tokens per second for ``requests`` completions, ``concurrency`` in flight at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client:

        async def one(i: int) -> int:
            async with limit:
                reply = await client.completions.create(
                    model="tiny", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, seed=i
                )
                assert reply.usage is not None
                return reply.usage.completion_tokens

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(requests))))
        return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="onnx,reference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    engines = args.engines.split(",")
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    samples: dict[str, dict[str, list[float]]] = {
        e: {"ready_s": [], "ttft_s": [], "sequential": [], "batched": []} for e in engines
    }
    try:
        for engine in engines:  # one at a time, so each start has the machine to itself
            server, url, ready_s = _start(engine, args.threads, args.concurrency)
            servers[engine] = (server, url)
            samples[engine]["ready_s"].append(ready_s)
            asyncio.run(_throughput(url, 2, 1, 8))  # warm-up
        for _ in range(args.rounds):
            for engine in engines:
                url = servers[engine][1]
                s = samples[engine]
                s["ttft_s"] += [asyncio.run(_ttft(url)) for _ in range(5)]
                s["sequential"].append(
                    asyncio.run(_throughput(url, args.requests, 1, args.max_tokens))
                )
                s["batched"].append(
                    asyncio.run(_throughput(url, args.requests, args.concurrency, args.max_tokens))
                )
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    report: dict[str, object] = {
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    medians = {
        engine: {
            "ready_s": round(s["ready_s"][0], 2),
            "ttft_ms": round(1000 * statistics.median(s["ttft_s"]), 1),
            "sequential_tokens_per_s": round(statistics.median(s["sequential"]), 1),
            "batched_tokens_per_s": round(statistics.median(s["batched"]), 1),
            "batched_over_sequential": round(
                statistics.median(
                    b / q for b, q in zip(s["batched"], s["sequential"], strict=True)
                ),
                2,
            ),
        }
        for engine, s in samples.items()
    }
    report["engines"] = medians
    if {"onnx", "reference"} <= medians.keys():
        onnx, ref = medians["onnx"], medians["reference"]
        report["onnx_over_reference"] = {
            key: round(onnx[key] / ref[key], 2) for key in onnx if ref[key]
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
