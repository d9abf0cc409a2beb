"""Replicas as supervised child processes on free loopback ports.

Each replica has one asyncio task that starts the engine, probes it until ready, and, when the
process dies without being asked to, restarts it after an exponential backoff. Children get
``PR_SET_PDEATHSIG`` so that even a SIGKILLed ``kapell up`` leaves no engine behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from kapell.api.model import Model
from kapell.api.replica import Replica, ReplicaPhase
from kapell.backends.sim.slices import slice_args
from kapell.engines.adapters import LaunchContext, adapter_for, resolve_weights
from kapell.net import free_port

HOST = "127.0.0.1"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a replica ready this long has its backoff reset
PROBE_INTERVAL_S = 0.1
STOP_GRACE_S = 10.0
DRAIN_S = 0.3  # time between leaving the endpoint list and SIGTERM


def die_with_parent() -> None:
    """Run in the child before exec: SIGTERM it when the parent dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Running:
    """Mutable supervisor state of one replica; ``snapshot`` is what others see."""

    id: str
    model: Model
    model_key: str
    revision: str
    phase: str = "Starting"
    url: str = ""
    restarts: int = 0
    message: str = ""
    pid: int | None = None
    failed_starts: int = 0
    ready_since: float | None = None
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LocalReplicas:
    """Starts, watches and stops replica processes; implements the controllers' ``ReplicaBackend``."""

    def __init__(
        self,
        log_dir: Path,
        on_change: Callable[[str], None],
        record: Callable[[str, str, str, str], None],
        next_number: Callable[[], int] | None = None,
    ) -> None:
        """``next_number`` numbers replicas (``NAME-REVISION-NUMBER``); ``kapell up`` draws it
        from a counter in the store, so ids never repeat across runs and a replica's log file
        and events are its own. By default, 1, 2, ... for this object's life."""
        self._log_dir = log_dir
        self._on_change = on_change
        self._record = record
        self._replicas: dict[str, _Running] = {}
        self._next_number = next_number or itertools.count(1).__next__
        self._ready_seconds: dict[str, float] = {}
        self._cold_start_s: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- ReplicaBackend -------------------------------------------------------------------
    def replicas(self, model_key: str) -> list[Replica]:
        return [_snapshot(r) for r in self._replicas.values() if r.model_key == model_key]

    def start_replica(self, model: Model, revision: str) -> Replica:
        adapter_for(model).check_installed()
        weights = resolve_weights(model)
        slice_args(model)  # a MIG profile the sim engine's GPU lacks fails here, not in the child
        replica_id = f"{model.metadata.name}-{revision[:5]}-{self._next_number()}"
        running = _Running(replica_id, model, model.key, revision)
        self._replicas[replica_id] = running
        running.task = asyncio.get_running_loop().create_task(
            self._supervise(running, weights), name=f"replica {replica_id}"
        )
        return _snapshot(running)

    def stop_replica(self, replica_id: str) -> None:
        running = self._replicas.get(replica_id)
        if running is None or running.stopping:
            return
        running.stopping = True
        running.phase = "Stopping"
        running.wake.set()
        self._changed(running, "Stopping", "")

    # -- queries for the gateway and the CLI ----------------------------------------------
    def all(self) -> list[Replica]:
        return [_snapshot(r) for r in self._replicas.values()]

    def ready_seconds(self, model_key: str) -> float:
        """Replica-seconds the model's replicas have spent ready (for energy accounting)."""
        now = time.monotonic()
        running = sum(
            now - r.ready_since
            for r in self._replicas.values()
            if r.model_key == model_key and r.ready_since is not None
        )
        return self._ready_seconds.get(model_key, 0.0) + running

    def cold_start_s(self, model_key: str) -> float:
        """Seconds from launch to ready of the model's latest replica start (0 if none yet)."""
        return self._cold_start_s.get(model_key, 0.0)

    def pids(self) -> list[int]:
        return [r.pid for r in self._replicas.values() if r.pid is not None]

    def pid_models(self) -> dict[int, str]:
        """Each replica process's model name (for attributing measured GPU energy)."""
        return {r.pid: r.model.metadata.name for r in self._replicas.values() if r.pid is not None}

    def log_path(self, replica_id: str) -> Path:
        running = self._replicas.get(replica_id)
        name = running.model.metadata.name if running else replica_id.rsplit("-", 2)[0]
        return self._log_dir / name / f"{replica_id}.log"

    async def shutdown(self) -> None:
        """Stop every replica and wait for every process to exit."""
        for replica_id in list(self._replicas):
            self.stop_replica(replica_id)
        tasks = [r.task for r in self._replicas.values() if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- supervision ----------------------------------------------------------------------
    async def _supervise(self, running: _Running, weights: str) -> None:
        adapter = adapter_for(running.model)
        delay = BACKOFF_FIRST_S
        try:
            while not running.stopping:
                started = time.monotonic()
                if adapter.runs_process:
                    await self._run_once(running, weights)
                else:
                    await self._watch_external(running, weights)
                if running.stopping:
                    break
                if running.phase == "Ready" and time.monotonic() - started > STABLE_AFTER_S:
                    delay = BACKOFF_FIRST_S
                running.failed_starts = 0 if running.phase == "Ready" else running.failed_starts + 1
                running.restarts += 1
                running.phase = "Backoff"
                self._changed(running, "Crashed", running.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(running.wake.wait(), timeout=delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            self._replicas.pop(running.id, None)
            self._record(running.model_key, running.id, "Stopped", "")
            self._on_change(running.model_key)

    async def _run_once(self, running: _Running, weights: str) -> None:
        adapter = adapter_for(running.model)
        port = free_port(HOST)
        argv = adapter.command(running.model, LaunchContext(HOST, port, weights))
        argv += slice_args(running.model)  # a sim replica on a MIG slice simulates the slice
        log_path = self.log_path(running.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **running.model.spec.engine.env, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            log.write(f"--- kapell: starting {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env,
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                running.message = f"cannot start {argv[0]}: {exc.strerror}"
                return
        running.pid = proc.pid
        running.url = f"http://{HOST}:{port}"
        running.phase = "Starting"
        self._changed(running, "Starting", f"pid {proc.pid} on port {port}")
        probe = asyncio.create_task(
            self._probe_until_ready(running, adapter.readiness_path, launched_s=time.monotonic())
        )
        exited = asyncio.create_task(proc.wait())
        stop = asyncio.create_task(running.wake.wait())
        try:
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            probe.cancel()
            stop.cancel()
            await asyncio.gather(probe, stop, return_exceptions=True)
        if not exited.done():  # asked to stop: leave the endpoint list, drain, then SIGTERM
            await asyncio.sleep(DRAIN_S)
            await _terminate(proc, exited)
        running.pid = None
        running.message = f"exited with code {proc.returncode}; see {log_path}"

    async def _watch_external(self, running: _Running, url: str) -> None:
        running.url = url.rstrip("/").removesuffix("/v1")
        probe = asyncio.create_task(self._probe_until_ready(running, "/v1/models"))
        try:
            await running.wake.wait()
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)

    async def _probe_until_ready(
        self, running: _Running, path: str, launched_s: float | None = None
    ) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        while running.phase != "Ready":
            try:
                async with self._session.get(running.url + path) as response:
                    if response.status == 200 and not running.stopping:
                        if launched_s is not None:
                            cold_start_s = time.monotonic() - launched_s
                            self._cold_start_s[running.model_key] = cold_start_s
                        running.phase = "Ready"
                        running.failed_starts = 0
                        self._changed(running, "Ready", running.url)
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(PROBE_INTERVAL_S)

    def _changed(self, running: _Running, event: str, message: str) -> None:
        now = time.monotonic()
        if running.phase == "Ready" and running.ready_since is None:
            running.ready_since = now
        elif running.phase != "Ready" and running.ready_since is not None:
            elapsed = now - running.ready_since
            self._ready_seconds[running.model_key] = (
                self._ready_seconds.get(running.model_key, 0.0) + elapsed
            )
            running.ready_since = None
        self._record(running.model_key, running.id, event, message)
        self._on_change(running.model_key)


async def _terminate(proc: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reaps the child."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(exited), timeout=STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await exited


def _snapshot(running: _Running) -> Replica:
    return Replica(
        id=running.id,
        model_key=running.model_key,
        revision=running.revision,
        phase=ReplicaPhase(running.phase),
        url=running.url,
        restarts=running.restarts,
        message=running.message,
        pid=running.pid,
        failed_starts=running.failed_starts,
    )
