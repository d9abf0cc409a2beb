"""One container of a pod on a serving node: a local process, its probes and its restarts.

The process runs in its own session (so its whole group can be signalled) inside the pod's
network namespace, with stdout and stderr appended to the container's log file. When it exits,
the restart policy decides: restart after the kubelet's back-off (``CrashLoopBackOff`` while
waiting), or stay terminated. A failing liveness or startup probe kills it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kapell.devcluster.podspec import Probe, ProbeTally, restart_delay, should_restart
from kapell.devcluster.podstatus import ContainerObservation, Running, Terminated, Waiting
from kapell.devcluster.probes import run_probe

log = logging.getLogger(__name__)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Backoff:
    base_s: float = 10.0
    cap_s: float = 300.0


@dataclass(frozen=True)
class Launch:
    """Everything needed to run one container; ``start_error`` says why it cannot exec."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    log_path: Path
    pod: str  # "name_namespace(uid)" for messages, as the kubelet writes it
    pod_ip: str
    in_netns: tuple[str, ...] = ()
    start_error: str = ""
    restart_policy: str = "Always"
    grace_s: float = 30.0
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    python: str = ""


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class ContainerRunner:
    """Runs ``launch`` until stopped or done; reports through ``obs`` and ``changed()``."""

    def __init__(
        self,
        launch: Launch,
        obs: ContainerObservation,
        backoff: Backoff,
        changed: Callable[[], None],
        started: Callable[[str, int | None], None],
    ) -> None:
        self.launch = launch
        self.obs = obs
        self._backoff = backoff
        self._changed = changed
        self._started = started  # (container, pid or None when it exited)
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._probes: list[asyncio.Task[None]] = []
        self.task = asyncio.create_task(self._run(), name=f"container {launch.pod} {launch.name}")

    async def stop(self, grace_s: float) -> None:
        """No more restarts; SIGTERM the process group, SIGKILL after ``grace_s``."""
        self._stopping.set()
        await self._kill(grace_s)
        await self.task

    async def _kill(self, grace_s: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        _killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace_s)
        except TimeoutError:
            _killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _run(self) -> None:
        crashes = 0
        while True:
            started_at = now()
            exit_code, reason, message, ran_s = await self._run_once(started_at)
            terminated = Terminated(exit_code, reason, started_at, now(), message)
            self.obs.ready = self.obs.started = False
            if self._stopping.is_set() or not should_restart(self.launch.restart_policy, exit_code):
                self.obs.state = terminated
                self._changed()
                return
            crashes = 1 if ran_s >= 2 * self._backoff.cap_s else crashes + 1
            delay = restart_delay(crashes, self._backoff.base_s, self._backoff.cap_s)
            self.obs.last_state = terminated
            self.obs.state = Waiting(
                "CrashLoopBackOff",
                f"back-off {delay:.0f}s restarting failed container={self.launch.name} "
                f"pod={self.launch.pod}",
            )
            self._changed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            self.obs.restart_count += 1

    async def _run_once(self, started_at: str) -> tuple[int, str, str, float]:
        """Start, watch and reap the process once: (exit code, reason, message, seconds run)."""
        launch = self.launch
        if launch.start_error:
            return 128, "StartError", launch.start_error, 0.0
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            with launch.log_path.open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    *launch.in_netns, *launch.argv, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=launch.env,
                    cwd=launch.cwd, start_new_session=True,
                )  # fmt: skip
        except OSError as exc:
            return 128, "StartError", str(exc), 0.0
        self._process = process
        self.obs.state = Running(started_at)
        self.obs.container_id = f"kapell-dev://{process.pid}"
        self.obs.started = launch.startup is None
        self.obs.ready = launch.readiness is None and self.obs.started
        self._started(launch.name, process.pid)
        self._changed()
        self._start_probes()
        code = await process.wait()
        for probe in self._probes:
            probe.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        self._probes.clear()
        _killpg(process.pid, signal.SIGKILL)  # whatever the process left behind in its group
        self._started(launch.name, None)
        exit_code = code if code >= 0 else 128 - code
        return exit_code, "Completed" if exit_code == 0 else "Error", "", loop.time() - began

    def _start_probes(self) -> None:
        self._probes.append(asyncio.create_task(self._probe_all()))

    async def _probe_all(self) -> None:
        launch = self.launch
        if launch.startup is not None:
            tally = ProbeTally(launch.startup.success_threshold, launch.startup.failure_threshold)
            await asyncio.sleep(launch.startup.initial_delay_s)
            failures = 0
            while not tally.record(ok := await self._probe(launch.startup)):
                failures = 0 if ok else failures + 1
                if failures >= launch.startup.failure_threshold:
                    log.info("%s %s: startup probe failed, killing", launch.pod, launch.name)
                    await self._kill(launch.grace_s)
                    return
                await asyncio.sleep(launch.startup.period_s)
            self.obs.started = True
            self.obs.ready = launch.readiness is None
            self._changed()
        loops = []
        if launch.readiness is not None:
            loops.append(self._readiness(launch.readiness))
        if launch.liveness is not None:
            loops.append(self._liveness(launch.liveness))
        await asyncio.gather(*loops)

    async def _probe(self, probe: Probe) -> bool:
        launch = self.launch
        return await run_probe(probe, launch.pod_ip, launch.in_netns, launch.env, launch.python)

    async def _readiness(self, probe: Probe) -> None:
        tally = ProbeTally(probe.success_threshold, probe.failure_threshold)
        await asyncio.sleep(probe.initial_delay_s)
        while True:
            ready = tally.record(await self._probe(probe))
            if ready != self.obs.ready:
                self.obs.ready = ready
                self._changed()
            await asyncio.sleep(probe.period_s)

    async def _liveness(self, probe: Probe) -> None:
        tally = ProbeTally(1, probe.failure_threshold, passing=True)
        await asyncio.sleep(probe.initial_delay_s)
        while tally.record(await self._probe(probe)):
            await asyncio.sleep(probe.period_s)
        log.info("%s %s: liveness probe failed, killing", self.launch.pod, self.launch.name)
        await self._kill(self.launch.grace_s)
