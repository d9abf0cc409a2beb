"""``kapell bench gateway``: latency kapell's gateway adds, against direct calls and LiteLLM.

Built to give credible numbers on a small machine shared with other jobs:

- every server runs in its own process: two ``sim`` replicas with a fixed, short upstream
  latency (``--speedup``), kapell's gateway in front of them, LiteLLM's proxy in front of the
  same replicas; the load generator (``kapell.bench.gateway_load``) is a process of its own;
- load is open loop at a constant rate (sends never wait for answers), latency counted from
  each request's send;
- the paths are measured INTERLEAVED in short alternating rounds (direct, kapell, kapell,
  direct, ...), each round with a discarded warm-up, so a noisy neighbour hits both alike;
  the reported p50/p99 are the medians over rounds of each round's percentiles, and
  ``added_p50_ms``/``added_p99_ms`` are the medians of the per-round differences;
- the highest rate with p99 under 50 ms comes from a rate ladder run interleaved the same way
  (a rate counts as sustained if one of two tries meets the limit, for every path alike);
- an overload phase sends 10x a small configured capacity to a gateway with limits and then
  drops the load, checking 429s, no 5xx, memory and recovery;
- a scale-from-zero phase (``kapell.bench.gateway_coldstart``) times first tokens after a
  replica's cold start.

Run as a module with ``--serve`` it is the gateway process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kapell.bench.sim_engines import MODEL, sim_command
from kapell.net import free_port, wait_http

P99_LIMIT_MS = 50.0
LADDER = (5, 10, 25, 50, 100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500)
LITELLM_VERSION = "1.81.13"
"""Pinned before the compromised 1.82.7/1.82.8 releases."""
REPO = Path(__file__).resolve().parents[3]

Progress = Callable[[str], None]


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loaded_extensions(pid: int) -> dict[str, bool]:
    """Whether process ``pid`` has uvloop's loop and httptools' parser mapped: proof that
    the server runs on them rather than on asyncio's and h11's pure-Python code."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {"uvloop": "uvloop/loop." in maps, "httptools": "httptools/parser/parser." in maps}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
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


def _start_sims(
    procs: list[subprocess.Popen[bytes]], count: int, profile: str, speedup: float
) -> list[str]:
    urls = []
    for _ in range(count):
        port = free_port()
        command = sim_command(port, speedup=speedup, cold_start_s=0.0, profile=profile)
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        wait_http(url + "/health")
    return urls


def _start_kapell(
    procs: list[subprocess.Popen[bytes]], upstreams: list[str], *limits: str
) -> tuple[str, int]:
    port = free_port()
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "kapell.bench.gateway", "--serve", str(port), *limits, *upstreams]
    ))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    return url, procs[-1].pid


def litellm_config(upstreams: list[str]) -> dict[str, Any]:
    """LiteLLM's proxy config: one deployment per replica under ``MODEL``, nothing else."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": url + "/v1",
                    "api_key": "unused",
                },
            }
            for url in upstreams
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }


LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the model cost map at start-up
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_SCHEMA_UPDATE": "True",
}
"""Environment that keeps LiteLLM's proxy offline and quiet (no database is configured)."""


def _start_litellm(
    procs: list[subprocess.Popen[bytes]], upstreams: list[str], binary: str, workdir: Path
) -> str:
    config = workdir / "litellm.yaml"
    config.write_text(json.dumps(litellm_config(upstreams)))
    port = free_port()
    env = {**os.environ, **LITELLM_ENV}
    log = (workdir / "litellm.log").open("wb")
    procs.append(subprocess.Popen(
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    ))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", timeout_s=240, interval_s=0.5)
    return url


def ensure_litellm(progress: Progress = lambda _: None) -> str:
    """The LiteLLM proxy executable; creates ``.venv-litellm`` (pinned) when missing.

    LiteLLM pins older uvicorn and rich than kapell, so it gets a virtualenv of its own.
    """
    venv = REPO / ".venv-litellm"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        progress("creating .venv-litellm (one-time)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
            check=True,
        )
    return str(binary)


class LoadGenerator:
    """The load-generator process (``kapell.bench.gateway_load``), driven by JSON lines."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kapell.bench.gateway_load"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def run(
        self, urls: list[str], rate: float, duration_s: float, **options: Any
    ) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        command = {"urls": urls, "rate": rate, "duration_s": duration_s, **options}
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()


def sustained(result: dict[str, Any]) -> bool:
    """Met the latency limit with under 1% errors, and the generator kept the rate."""
    return bool(
        result["p99_ms"] <= P99_LIMIT_MS
        and result["errors"] <= 0.01 * result["sent"]
        and result["send_rate"] >= 0.9 * result["rate"]
    )


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _run_metered(
    load: LoadGenerator, urls: list[str], rate: float, pids: list[int], options: dict[str, Any]
) -> dict[str, Any]:
    """``load.run`` plus the CPU the path's server processes ``pids`` spent per request
    (noise-robust: a busy machine stretches latency, not CPU time)."""
    before_s = sum(cpu_s(pid) for pid in pids)
    result = load.run(urls, rate, **options)
    requests = round(rate * (options["duration_s"] + options.get("warmup_s", 0.0)))
    spent_s = sum(cpu_s(pid) for pid in pids) - before_s
    result["server_cpu_ms_per_request"] = round(spent_s * 1000 / requests, 3)
    return result


def wait_idle(pid: int, *, busy_below: float = 0.05, timeout_s: float = 90.0) -> float:
    """Wait until process ``pid`` uses under ``busy_below`` of a core for a second (a proxy
    still working off a backlog would otherwise slow whatever is measured next); the wait."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before_s = cpu_s(pid)
        time.sleep(1.0)
        if cpu_s(pid) - before_s < busy_below:
            break
    return round(time.monotonic() - started, 1)


def _fixed_rate(
    load: LoadGenerator,
    paths: dict[str, list[str]],
    pids: dict[str, list[int]],
    options: dict[str, Any],
    rate: float,
    rounds: int,
    progress: Progress,
) -> dict[str, Any]:
    """Interleaved rounds of direct and kapell, then one round of LiteLLM (it may back up)."""
    per_path: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    paired: list[str] = [name for name in ("direct", "kapell") if name in paths]
    for round_index in range(rounds):
        order = paired if round_index % 2 == 0 else paired[::-1]
        for name in order:
            progress(f"{rate:g} req/s, round {round_index + 1}/{rounds}: {name}")
            per_path[name].append(_run_metered(load, paths[name], rate, pids[name], options))
    if "litellm" in paths:
        progress(f"{rate:g} req/s: litellm")
        per_path["litellm"].append(
            _run_metered(load, paths["litellm"], rate, pids["litellm"], options)
        )
        per_path["litellm"][-1]["idle_wait_s"] = wait_idle(pids["litellm"][0])
    section: dict[str, Any] = {}
    for name, results in per_path.items():
        section[name] = {
            "rounds": len(results),
            "p50_ms": _median([r["p50_ms"] for r in results]),
            "p99_ms": _median([r["p99_ms"] for r in results]),
            "errors": sum(r["errors"] for r in results),
            "sent": sum(r["sent"] for r in results),
            "round_p50_ms": [r["p50_ms"] for r in results],
            "round_p99_ms": [r["p99_ms"] for r in results],
        }
        section[name]["server_cpu_ms_per_request"] = _median(
            [r["server_cpu_ms_per_request"] for r in results]
        )
        if "ttft_p50_ms" in results[0]:
            section[name]["ttft_p50_ms"] = _median([r["ttft_p50_ms"] for r in results])
    direct, kapell = per_path["direct"], per_path["kapell"]
    for q in ("p50", "p99"):
        diffs = [k[f"{q}_ms"] - d[f"{q}_ms"] for k, d in zip(kapell, direct, strict=True)]
        section[f"added_{q}_ms"] = _median(diffs)
    return section


def _ladder(
    load: LoadGenerator,
    paths: dict[str, list[str]],
    pids: dict[str, list[int]],
    options: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    """Climb ``LADDER`` with every path still sustaining, interleaved; best of two tries.

    After a failed try the path's servers are given time to work off their backlog, so the
    next measurement (of any path) starts on a machine that is not still busy with it.
    """
    best = dict.fromkeys(paths, 0.0)
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    active = list(paths)
    for step, rate in enumerate(LADDER):
        order = active if step % 2 == 0 else active[::-1]
        for name in order:
            for attempt in range(2):
                progress(f"ladder {rate} req/s: {name} (try {attempt + 1})")
                result = load.run(paths[name], rate, **options)
                steps[name].append({k: result[k] for k in ("rate", "p50_ms", "p99_ms", "errors",
                                                           "send_rate")})  # fmt: skip
                if sustained(result):
                    best[name] = rate
                    break
                for pid in pids[name]:
                    wait_idle(pid)
        active = [name for name in active if best[name] == rate]
        if not active:
            break
    return {name: {"max_rate_p99_under_50ms": best[name], "ladder": steps[name]} for name in paths}


def _overload(
    load: LoadGenerator, sims: list[str], *, in_flight: int, queue: int, duration_s: float,
    progress: Progress,
) -> dict[str, Any]:  # fmt: skip
    """10x the configured capacity through a gateway with limits, then back to half of it.

    Capacity is ``in_flight`` x replicas requests at once over the latency of one request at
    light load (measured first), so the offered 10x is relative to what the limits allow.
    """
    with _processes() as procs:
        limits = ("--max-in-flight-per-replica", str(in_flight), "--queue-max", str(queue))
        url, pid = _start_kapell(procs, sims, *limits)
        light = load.run([url], 5, 2.0, max_tokens=32, warmup_s=0.5)
        capacity = in_flight * len(sims) / (light["p50_ms"] / 1000)
        before_mb = rss_mb(pid)
        progress(f"overload: {capacity * 10:.0f} req/s (10x capacity)")
        over = load.run([url], capacity * 10, duration_s, max_tokens=32, timeout_s=60)
        after_mb = rss_mb(pid)
        progress(f"overload: recovery at {capacity / 2:.0f} req/s")
        recovery = load.run([url], capacity / 2, duration_s, max_tokens=32, timeout_s=60)
    statuses = over["statuses"]
    return {
        "capacity_req_s": round(capacity, 1),
        "offered_req_s": round(capacity * 10, 1),
        "limits": {"max_in_flight_per_replica": in_flight, "queue_max_per_model": queue},
        "overload": {
            k: over.get(k)
            for k in (
                "sent",
                "statuses",
                "transport_errors",
                "p50_ms",
                "p99_ms",
                "refused_p50_ms",
                "refused_p99_ms",
                "send_rate",
            )
        },
        "gateway_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
        "rss_growth_mb": round(after_mb - before_mb, 1),
        "recovery": {
            k: recovery[k] for k in ("rate", "sent", "statuses", "errors", "p50_ms", "p99_ms")
        },
        "recovered": recovery["errors"] == 0 and recovery["sent"] > 0,
    }


def _labelled(progress: Progress, prefix: str, text: str) -> None:
    progress(prefix + text)


def run(
    *,
    rate: float = 300.0,
    rounds: int = 5,
    round_s: float = 2.0,
    warmup_s: float = 0.5,
    replicas: int = 2,
    max_tokens: int = 8,
    speedup: float = 1000.0,
    profile: str = "h100-llama3-8b",
    litellm: bool = True,
    litellm_bin: str | None = None,
    phases: tuple[str, ...] = ("fixed", "ladder", "overload", "cold_start"),
    cold_start_s: float = 2.0,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Run the whole benchmark and return its JSON-ready result."""
    result: dict[str, Any] = {
        "rate": rate, "rounds": rounds, "round_s": round_s, "warmup_s": warmup_s,
        "replicas": replicas, "max_tokens": max_tokens, "sim_speedup": speedup,
        "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0],
        "p99_limit_ms": P99_LIMIT_MS,
    }  # fmt: skip
    load = LoadGenerator()
    try:
        with _processes() as procs, tempfile.TemporaryDirectory() as workdir:
            progress("starting sim replicas and kapell")
            sims = _start_sims(procs, replicas, profile, speedup)
            kapell_url, kapell_pid = _start_kapell(procs, sims)
            paths: dict[str, list[str]] = {"direct": sims, "kapell": [kapell_url]}
            pids = {"direct": [p.pid for p in procs[:replicas]], "kapell": [kapell_pid]}
            if litellm:
                progress("starting LiteLLM's proxy")
                try:
                    binary = litellm_bin or ensure_litellm(progress)
                    paths["litellm"] = [_start_litellm(procs, sims, binary, Path(workdir))]
                    pids["litellm"] = [procs[-1].pid]
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    result["litellm_error"] = str(exc)
            for urls in paths.values():  # connections, imports and first-call work
                load.run(urls, 50, 1.0, max_tokens=max_tokens)
            rss_before = rss_mb(kapell_pid)
            result["kapell_native_extensions"] = loaded_extensions(kapell_pid)
            for mode, stream in (("non_streaming", False), ("streaming", True)):
                options = {"duration_s": round_s, "warmup_s": warmup_s, "stream": stream,
                           "max_tokens": max_tokens}  # fmt: skip
                section: dict[str, Any] = {}
                labelled = functools.partial(_labelled, progress, f"{mode}: ")
                if "fixed" in phases:
                    section["at_rate"] = _fixed_rate(
                        load, paths, pids, options, rate, rounds, labelled
                    )
                if "ladder" in phases:
                    ladder = _ladder(load, paths, pids, options, labelled)
                    section["max_rate"] = ladder
                    theirs = ladder.get("litellm", {}).get("max_rate_p99_under_50ms")
                    ours = ladder["kapell"]["max_rate_p99_under_50ms"]
                    if theirs is not None:
                        section["throughput_ratio_vs_litellm"] = (
                            round(ours / theirs, 2) if theirs else None
                        )
                        if not theirs:
                            section["throughput_ratio_note"] = (
                                f"LiteLLM met p99 <= {P99_LIMIT_MS:g} ms at no rate of the "
                                f"ladder (lowest {LADDER[0]} req/s)"
                            )
                at_rate = section.get("at_rate", {})
                if "litellm" in at_rate:
                    section["server_cpu_per_request_litellm_over_kapell"] = round(
                        at_rate["litellm"]["server_cpu_ms_per_request"]
                        / at_rate["kapell"]["server_cpu_ms_per_request"],
                        1,
                    )
                result[mode] = section
            result["kapell_rss_growth_mb"] = round(rss_mb(kapell_pid) - rss_before, 1)
        if "overload" in phases:
            with _processes() as procs:
                slow = _start_sims(procs, replicas, profile, 1.0)
                result["overload"] = _overload(
                    load, slow, in_flight=4, queue=16, duration_s=3.0, progress=progress
                )
    finally:
        load.close()
    if "cold_start" in phases:
        from kapell.bench.gateway_coldstart import scale_from_zero

        progress(f"scale from zero: sim cold start {cold_start_s:g}s, 200 concurrent")
        result["scale_from_zero"] = asyncio.run(
            scale_from_zero(cold_start_s=cold_start_s, requests=200, profile=profile)
        ).summary()
    return result


def _serve(argv: list[str]) -> None:
    from kapell.gateway.app import create_app
    from kapell.gateway.config import GatewayConfig
    from kapell.gateway.endpoints import StaticEndpointSource
    from kapell.gateway.server import serve

    parser = argparse.ArgumentParser(prog="kapell.bench.gateway --serve")
    parser.add_argument("port", type=int)
    parser.add_argument("upstreams", nargs="+")
    parser.add_argument("--max-in-flight-per-replica", type=int, default=256)
    parser.add_argument("--queue-max", type=int, default=1024)
    args = parser.parse_args(argv)
    config = GatewayConfig(
        max_in_flight_per_replica=args.max_in_flight_per_replica,
        queue_max_per_model=args.queue_max,
    )
    app = create_app(StaticEndpointSource({MODEL: args.upstreams}), config)
    serve(app, "127.0.0.1", args.port)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        _serve(sys.argv[2:])
