"""``kapell bench gateway``: latency kapell's gateway adds, against direct calls and LiteLLM.

The same open-loop load (requests at fixed intervals, not waiting for answers) goes to ``sim``
engine replicas (a) directly, (b) through kapell's gateway, (c) through LiteLLM's proxy, each
server in its own process, non-streaming and streaming. For each path it reports p50/p99
latency at a fixed rate and the highest rate of a ladder it sustains with p99 under 50 ms,
then ``added_p50_ms``/``added_p99_ms`` (kapell minus direct) and
``throughput_ratio_vs_litellm``. Run as a module with ``--serve`` it is the gateway process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

MODEL = "bench"
P99_LIMIT_MS = 50.0
LADDER = (25, 50, 100, 200, 300, 400, 600, 800, 1000, 1400)


@dataclass
class LoadResult:
    """Latencies of one constant-rate run."""

    rate: float
    sent: int
    errors: int
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    achieved_rate: float

    @property
    def sustained(self) -> bool:
        return (
            self.p99_ms <= P99_LIMIT_MS
            and self.errors <= self.sent * 0.01
            and self.achieved_rate >= 0.9 * self.rate
        )

    def summary(self) -> dict[str, Any]:
        out = {"rate": self.rate, "sent": self.sent, "errors": self.errors,
               "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3)}  # fmt: skip
        if self.ttft_p50_ms is not None:
            out["ttft_p50_ms"] = round(self.ttft_p50_ms, 3)
        return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g}s")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _start_sims(procs: list[subprocess.Popen[bytes]], count: int, profile: str) -> list[str]:
    urls = []
    for _ in range(count):
        port = _free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kapell.engines.sim", "--model", profile, "--served-name",
             MODEL, "--host", "127.0.0.1", "--port", str(port), "--cold-start-s", "0",
             "--speedup", "1000"],
            stdout=subprocess.DEVNULL,
        ))  # fmt: skip
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        _wait_http(url + "/health")
    return urls


def _start_kapell(procs: list[subprocess.Popen[bytes]], upstreams: list[str]) -> str:
    port = _free_port()
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "kapell.bench.gateway", "--serve", str(port), *upstreams]
    ))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/healthz")
    return url


def _start_litellm(
    procs: list[subprocess.Popen[bytes]], upstreams: list[str], binary: str, workdir: Path
) -> str:
    config = workdir / "litellm.yaml"
    entries = [
        {"model_name": MODEL,
         "litellm_params": {"model": f"openai/{MODEL}", "api_base": url + "/v1", "api_key": "x"}}
        for url in upstreams
    ]  # fmt: skip
    config.write_text(json.dumps({"model_list": entries,
                                  "litellm_settings": {"set_verbose": False}}))  # fmt: skip
    port = _free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    procs.append(subprocess.Popen(
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    ))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/health/liveliness", timeout_s=180)
    return url


async def _load(
    bases: list[str], rate: float, duration_s: float, stream: bool, max_tokens: int
) -> LoadResult:
    """Send ``rate`` req/s for ``duration_s`` (open loop), rotating over ``bases``."""
    body = json.dumps({"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": "Say hi."}]}).encode()  # fmt: skip
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    count = max(1, int(rate * duration_s))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def one(i: int) -> None:
            nonlocal errors
            start = time.perf_counter()
            url = bases[i % len(bases)] + "/v1/chat/completions"
            try:
                async with session.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as reply:
                    first = None
                    async for _ in reply.content.iter_any():
                        first = first or time.perf_counter()
                    if reply.status != 200:
                        errors += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            end = time.perf_counter()
            latencies.append(end - start)
            if stream and first is not None:
                ttfts.append(first - start)

        loop = asyncio.get_running_loop()
        began = loop.time()
        tasks = []
        for i in range(count):
            delay = began + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - began
    values = np.array(latencies or [float("inf")]) * 1000
    return LoadResult(
        rate=rate,
        sent=count,
        errors=errors,
        p50_ms=float(np.percentile(values, 50)),
        p99_ms=float(np.percentile(values, 99)),
        ttft_p50_ms=float(np.percentile(np.array(ttfts) * 1000, 50)) if ttfts else None,
        achieved_rate=len(latencies) / elapsed if elapsed > 0 else 0.0,
    )


def _highest_sustained(
    bases: list[str], stream: bool, max_tokens: int, step_s: float, tick: Callable[[], None]
) -> dict[str, Any]:
    best = 0.0
    steps = []
    for rate in LADDER:
        result = asyncio.run(_load(bases, rate, step_s, stream, max_tokens))
        tick()
        steps.append(result.summary())
        if not result.sustained:
            break
        best = rate
    return {"max_rate_p99_under_50ms": best, "ladder": steps}


def run(
    *,
    rate: float = 300.0,
    duration_s: float = 10.0,
    step_s: float = 3.0,
    replicas: int = 2,
    max_tokens: int = 8,
    profile: str = "h100-llama3-8b",
    litellm_bin: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the whole benchmark and return its JSON-ready result."""
    litellm = litellm_bin or _find_litellm()
    result: dict[str, Any] = {"rate": rate, "duration_s": duration_s, "replicas": replicas,
                              "max_tokens": max_tokens, "cpus": os.cpu_count(),
                              "p99_limit_ms": P99_LIMIT_MS}  # fmt: skip
    with _processes() as procs, tempfile.TemporaryDirectory() as workdir:
        sims = _start_sims(procs, replicas, profile)
        paths: dict[str, list[str]] = {"direct": sims, "kapell": [_start_kapell(procs, sims)]}
        kapell_pid = procs[-1].pid
        if litellm is None:
            result["litellm_error"] = "litellm not found: pip install '.[bench]' (see pyproject)"
        else:
            try:
                paths["litellm"] = [_start_litellm(procs, sims, litellm, Path(workdir))]
            except RuntimeError as exc:
                result["litellm_error"] = str(exc)
        for base in (b for urls in paths.values() for b in urls):  # warm connections and JITs
            asyncio.run(_load([base], 50, 1.0, False, max_tokens))
        rss_before = _rss_mb(kapell_pid)
        for mode, stream in (("non_streaming", False), ("streaming", True)):
            section: dict[str, Any] = {}
            for name, bases in paths.items():
                progress(f"{mode} {name} at {rate:g} req/s")
                fixed = asyncio.run(_load(bases, rate, duration_s, stream, max_tokens))
                label = f"{mode} {name} ladder"
                ladder = _highest_sustained(
                    bases, stream, max_tokens, step_s, functools.partial(progress, label)
                )
                section[name] = {"at_rate": fixed.summary(), **ladder}
            kapell, direct = section["kapell"]["at_rate"], section["direct"]["at_rate"]
            section["added_p50_ms"] = round(kapell["p50_ms"] - direct["p50_ms"], 3)
            section["added_p99_ms"] = round(kapell["p99_ms"] - direct["p99_ms"], 3)
            if "litellm" in section:
                theirs = section["litellm"]["max_rate_p99_under_50ms"]
                ours = section["kapell"]["max_rate_p99_under_50ms"]
                section["throughput_ratio_vs_litellm"] = round(ours / theirs, 2) if theirs else None
            result[mode] = section
        result["kapell_rss_growth_mb"] = round(_rss_mb(kapell_pid) - rss_before, 1)
    return result


def _find_litellm() -> str | None:
    local = Path(__file__).resolve().parents[3] / ".venv-litellm" / "bin" / "litellm"
    return str(local) if local.exists() else shutil.which("litellm")


def _serve(port: int, upstreams: list[str]) -> None:
    from kapell.gateway.app import create_app
    from kapell.gateway.endpoints import StaticEndpointSource
    from kapell.gateway.server import serve

    serve(create_app(StaticEndpointSource({MODEL: upstreams})), "127.0.0.1", port)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]), sys.argv[3:])
