"""Scale from zero through kapell's gateway with a real ``sim`` replica process.

A model starts with no replica. ``requests`` concurrent streamed requests arrive; the first
queued one makes the gateway call ``EndpointSource.request_capacity``, which here spawns a
``sim`` engine process with a cold start of ``cold_start_s`` (what a platform does), polls
its ``/health`` every ``PROBE_INTERVAL_S`` and publishes it. The result says whether every
request was served exactly once and how long the first tokens took, measured from the moment
the replica was asked for. Used by ``kapell bench gateway`` (timings) and by an integration
test (correctness).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvicorn

from kapell.bench.sim_engines import MODEL, sim_command
from kapell.gateway.app import Gateway
from kapell.gateway.endpoints import StaticEndpointSource, external_model
from kapell.net import free_port

PROBE_INTERVAL_S = 0.01

StreamOne = Callable[[str, int], Awaitable[tuple[str, float]]]
"""``stream_one(gateway_url, i)`` sends request ``i`` streamed and drains it; returns the
response id and the ``time.monotonic()`` of its first chunk; raises on failure."""


@dataclass
class ColdStartResult:
    """What one scale-from-zero run saw (times in seconds from the capacity request)."""

    cold_start_s: float
    requests: int
    failures: list[str] = field(default_factory=list)
    response_ids: list[str] = field(default_factory=list)
    engine_requests: int = 0
    """Requests the replica itself finished (its own counter): more than ``requests`` would
    mean a request was sent twice."""
    ready_s: float = 0.0
    first_tokens_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        first = sorted(self.first_tokens_s)
        return {
            "cold_start_s": self.cold_start_s,
            "requests": self.requests,
            "failed": len(self.failures),
            "duplicated": max(0, self.engine_requests - self.requests),
            "distinct_response_ids": len(set(self.response_ids)),
            "replica_ready_s": round(self.ready_s, 3),
            "process_start_overhead_s": round(self.ready_s - self.cold_start_s, 3),
            "first_token_s": round(first[0], 3) if first else None,
            "median_first_token_s": round(statistics.median(first), 3) if first else None,
            "last_first_token_s": round(first[-1], 3) if first else None,
            "first_token_after_ready_s": round(first[0] - self.ready_s, 3) if first else None,
            "target_first_token_s": round(self.cold_start_s + 0.2, 3),
        }


_CLIENTS = """
import asyncio, json, sys, time
import aiohttp

async def one(session, url, i):
    body = {"model": sys.argv[3], "max_tokens": 4, "stream": True,
            "messages": [{"role": "user", "content": f"request {i}"}]}
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as reply:
            if reply.status != 200:
                return {"error": f"status {reply.status}: {await reply.text()}"}
            first = await reply.content.readline()
            first_s = time.monotonic()
            rest = await reply.read()
    except aiohttp.ClientError as exc:
        return {"error": repr(exc)}
    if b'"error"' in rest:
        return {"error": rest.decode()}
    return {"id": first.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode(), "first_s": first_s}

async def main():
    url, n = sys.argv[1], int(sys.argv[2])
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        for result in await asyncio.gather(*(one(s, url, i) for i in range(n))):
            print(json.dumps(result))

asyncio.run(main())
"""
"""The clients run in a process of their own, as real clients do: in the gateway's process
they would compete with it for the event loop and inflate its latency."""


async def _run_clients(url: str, requests: int) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENTS, url, str(requests), MODEL,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


async def _engine_requests(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/metrics") as reply:
        text = await reply.text()
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:request_success_total")
        )
    )


async def scale_from_zero(
    *,
    cold_start_s: float,
    requests: int,
    profile: str = "h100-llama3-8b",
    stream_one: StreamOne | None = None,
) -> ColdStartResult:
    """Run one scale-from-zero episode on the running loop (gateway served in-process)."""
    loop = asyncio.get_running_loop()
    result = ColdStartResult(cold_start_s=cold_start_s, requests=requests)
    asked_s: list[float] = []
    spawned: list[asyncio.subprocess.Process] = []
    background: set[asyncio.Task[None]] = set()

    async def start_replica() -> None:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *sim_command(port, speedup=1.0, cold_start_s=cold_start_s, profile=profile),
            stdout=asyncio.subprocess.DEVNULL,
        )
        spawned.append(process)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as probe:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with probe.get(url + "/health") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(PROBE_INTERVAL_S)
        result.ready_s = time.monotonic() - asked_s[0]
        source.set_endpoints(MODEL, [url])

    def on_capacity_request(model: str) -> None:
        if not asked_s:
            asked_s.append(time.monotonic())
            task = loop.create_task(start_replica())
            background.add(task)

    source = StaticEndpointSource(
        models=[external_model(MODEL, "")], on_capacity_request=on_capacity_request
    )
    gateway = Gateway(source)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(gateway.app, log_level="warning", lifespan="on", access_log=False)
    )
    serving = loop.create_task(server.serve(sockets=[sock]))
    connector = aiohttp.TCPConnector(limit=0)
    try:
        while not server.started:
            await asyncio.sleep(0.005)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=120)
        ) as session:

            async def one(i: int) -> dict[str, Any]:
                assert stream_one is not None
                try:
                    response_id, first_s = await stream_one(url, i)
                except Exception as exc:  # every failure is counted, none is lost
                    return {"error": f"{type(exc).__name__}: {exc}"}
                return {"id": response_id, "first_s": first_s}

            if stream_one is None:
                outcomes = await _run_clients(url, requests)
            else:
                outcomes = await asyncio.gather(*(one(i) for i in range(requests)))
            result.failures.extend(o["error"] for o in outcomes if "error" in o)
            result.failures.extend(["no answer"] * (requests - len(outcomes)))
            for outcome in outcomes:
                if "id" in outcome:
                    result.first_tokens_s.append(outcome["first_s"] - asked_s[0])
                    result.response_ids.append(outcome["id"])
            if source.ready_endpoints(MODEL):
                result.engine_requests = await _engine_requests(
                    session, source.ready_endpoints(MODEL)[0].base_url
                )
    finally:
        server.should_exit = True
        await serving
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for process in spawned:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await process.wait()
    return result
