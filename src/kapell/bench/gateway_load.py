"""The gateway benchmark's load generator: its own process, so it never shares a core's event
loop with the servers it measures.

It reads one JSON command per line on stdin and answers one JSON line on stdout::

    {"urls": [...], "rate": 300, "duration_s": 2, "warmup_s": 0.5, "stream": false,
     "max_tokens": 8, "timeout_s": 10}

Load is open loop: request ``i`` is sent at ``start + i / rate`` whether or not earlier ones
have answered, so a slow server never slows the sending (no coordinated omission); latency
counts from the moment the request is sent, and sends the generator made more than 1 ms late
(its own CPU starvation) are counted in ``late_sends``. Requests due in the first ``warmup_s``
are sent but not counted. Connections stay
open between commands, as a real client's pool would.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MODEL = "bench"


@dataclass
class _Tally:
    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)
    refused_s: list[float] = field(default_factory=list)
    """Latencies of 429 answers: how promptly an overloaded server says no."""
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0

    def status(self, code: int) -> None:
        key = str(code)
        self.statuses[key] = self.statuses.get(key, 0) + 1


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; inf for no values."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def request_body(stream: bool, max_tokens: int) -> bytes:
    """The chat request every path gets (same bytes, so only the path differs)."""
    return json.dumps({"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": "Say hi."}]}).encode()  # fmt: skip


async def run_load(session: aiohttp.ClientSession, command: dict[str, Any]) -> dict[str, Any]:
    """Run one constant-rate load and summarise it (latencies in ms)."""
    urls = [url + "/v1/chat/completions" for url in command["urls"]]
    rate = float(command["rate"])
    duration_s = float(command["duration_s"])
    warmup_s = float(command.get("warmup_s", 0.0))
    stream = bool(command.get("stream", False))
    body = request_body(stream, int(command.get("max_tokens", 8)))
    timeout = aiohttp.ClientTimeout(total=float(command.get("timeout_s", 10.0)))
    headers = {"content-type": "application/json"}
    tally = _Tally()
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    count = max(1, round(rate * (warmup_s + duration_s)))
    counted_from = round(rate * warmup_s)

    async def one(i: int) -> None:
        counted = i >= counted_from
        sent_s = clock()
        try:
            async with session.post(urls[i % len(urls)], data=body, headers=headers,
                                    timeout=timeout) as reply:  # fmt: skip
                first_s = None
                async for _ in reply.content.iter_any():
                    if first_s is None:
                        first_s = clock()
                done_s = clock()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError):
            if counted:
                tally.transport_errors += 1
            return
        if not counted:
            return
        tally.status(status)
        if status == 429:
            tally.refused_s.append(done_s - sent_s)
        if status == 200:
            tally.latencies_s.append(done_s - sent_s)
            if stream and first_s is not None:
                tally.ttfts_s.append(first_s - sent_s)

    began_s = clock() + 0.01
    late = 0
    tasks = []
    for i in range(count):
        due_s = began_s + i / rate
        delay_s = due_s - clock()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        elif delay_s < -0.001:
            late += 1
        tasks.append(asyncio.create_task(one(i)))
    send_end_s = clock()
    await asyncio.gather(*tasks)
    measured = count - counted_from
    ok = len(tally.latencies_s)
    ms = [v * 1000 for v in tally.latencies_s]
    result: dict[str, Any] = {
        "rate": rate,
        "sent": measured,
        "ok": ok,
        "statuses": tally.statuses,
        "transport_errors": tally.transport_errors,
        "errors": measured - ok,
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms, default=float("inf")), 3),
        "send_rate": round(count / max(send_end_s - began_s, 1e-9), 1),
        "late_sends": late,
    }
    if tally.refused_s:
        refused_ms = [v * 1000 for v in tally.refused_s]
        result["refused_p50_ms"] = round(percentile(refused_ms, 50), 3)
        result["refused_p99_ms"] = round(percentile(refused_ms, 99), 3)
    if stream:
        result["ttft_p50_ms"] = round(percentile([v * 1000 for v in tally.ttfts_s], 50), 3)
    return result


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        while line := await reader.readline():
            started = time.perf_counter()
            result = await run_load(session, json.loads(line))
            result["wall_s"] = round(time.perf_counter() - started, 2)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    import uvloop

    uvloop.run(_main())
