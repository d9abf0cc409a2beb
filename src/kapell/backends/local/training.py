"""TrainingJobs on this machine: one Ray cluster per run, its nodes supervised child processes.

Like KubeRay's RayJob, each run gets a cluster of its own: a head (``ray start --head``, no CPUs
of its own, so training runs on workers) and one worker node per worker-group replica, each a
``ray start --block`` process in a process group of its own, labelled with its group and its
capacity (spot or on-demand). The job's entrypoint goes through Ray's Job Submission API; its
driver log is followed over the dashboard's websocket into ``logs/trainingjobs/NAME/driver.log``
and read for progress lines (``kapell.api.jobenv``). A worker node that dies while the job
runs is started again after a backoff (capacity coming back); the cluster is torn down when
the run finishes. This class is the TrainingJob controller's ``TrainingBackend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from kapell.api import TrainingJob
from kapell.api.jobenv import JobEnv, parse_progress
from kapell.api.training import RunPhase, TrainingRun, progress_changes
from kapell.api.units import parse_quantity
from kapell.backends.local.replicas import HOST, die_with_parent
from kapell.net import free_port

HEAD_READY_LIMIT_S = 300.0  # generous: on a loaded machine a node can take minutes
POLL_S = 1.0
STOP_GRACE_S = 5.0
NODE_BACKOFF_FIRST_S = 1.0
NODE_BACKOFF_MAX_S = 30.0
RAY_ENV = {
    "RAY_DISABLE_USAGE_STATS": "1",
    # Every worker's progress line must reach the driver's log, never folded into a
    # "[repeated Nx across cluster]" summary, and once (not again through Ray Train's logger).
    "RAY_DEDUP_LOGS": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "PYTHONUNBUFFERED": "1",
}
RAY_STARTED = b"Ray runtime started."
_RAY_STATUS = {
    "PENDING": RunPhase.PENDING,
    "RUNNING": RunPhase.RUNNING,
    "SUCCEEDED": RunPhase.SUCCEEDED,
    "FAILED": RunPhase.FAILED,
    "STOPPED": RunPhase.FAILED,
}


def job_env(job: TrainingJob, checkpoint_root: str) -> JobEnv:
    """What the entrypoint is told: the spec's checkpoint URI, else ``checkpoint_root``."""
    spec = job.spec
    root = (spec.checkpoint.uri or checkpoint_root).rstrip("/")
    storage = f"{root}/{job.metadata.name}"
    return JobEnv(
        name=job.metadata.name,
        workers=spec.workers,
        cpus_per_worker=min(parse_quantity(g.resources.cpu) for g in spec.worker_group_specs),
        checkpoint_uri=root,
        checkpoint_interval=spec.checkpoint.interval_steps,
        output_uri=f"{storage}/model",
        max_restarts=spec.max_restarts,
    )


@dataclass
class _Node:
    """One Ray node: a ``ray start --block`` process and what it logs to."""

    name: str
    argv: list[str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    log_offset: int = 0  # where this start's output begins in ``log``


@dataclass
class _Run:
    """Mutable state of one run; ``TrainingRun`` is what the controller sees."""

    observed: TrainingRun
    job: TrainingJob
    env: JobEnv
    nodes: list[_Node] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    task: asyncio.Task[None] | None = None
    finished: bool = False


class LocalRayJobs:
    """Runs each TrainingJob on a Ray cluster of local child processes."""

    def __init__(
        self,
        log_dir: Path,
        checkpoint_root: Path,
        on_change: Callable[[str], None],
        record: Callable[[str, str, str, str], None],
    ) -> None:
        """``on_change(job_key)`` is called whenever a run's phase or progress changes;
        ``record(job_key, run, event, message)`` keeps events for ``kapell describe``."""
        self._log_dir = log_dir
        self._checkpoint_root = str(checkpoint_root)
        self._on_change = on_change
        self._record = record
        self._runs: dict[str, _Run] = {}
        self._stopping: list[_Run] = []  # stopped, nodes not yet down (for kill_now)

    # -- TrainingBackend ------------------------------------------------------------------
    def run(self, job_key: str) -> TrainingRun | None:
        run = self._runs.get(job_key)
        return None if run is None else run.observed

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Replaces a finished run of the job; an active one must be stopped first."""
        old = self._runs.get(job.key)
        if old is not None and not old.finished:
            raise RuntimeError(f"{job.key} already has an active run")
        env = job_env(job, self._checkpoint_root)
        observed = TrainingRun(job.key, revision, attempt, RunPhase.STARTING, "starting Ray")
        if old is not None:  # progress and counts carry over to the next attempt
            observed = replace(
                old.observed,
                revision=revision,
                attempt=attempt,
                phase=RunPhase.STARTING,
                message="starting Ray",
                submission_id="",
                dashboard_url="",
            )
        run = _Run(observed, job, env)
        self._runs[job.key] = run
        run.task = asyncio.get_running_loop().create_task(
            self._execute(run), name=f"training {job.key} attempt {attempt}"
        )

    def hold(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Nothing to prepare: a held job holds no processes here until ``start``."""

    def stop(self, job_key: str) -> None:
        run = self._runs.pop(job_key, None)
        if run is not None and run.task is not None:
            self._stopping = [r for r in self._stopping if r.task and not r.task.done()]
            self._stopping.append(run)
            run.task.cancel()

    # -- queries for the CLI and the composition root -------------------------------------
    def log_path(self, namespace: str, name: str) -> Path:
        """The driver's log of every attempt of a job, appended."""
        suffix = "" if namespace == "default" else f"-{namespace}"
        return self._log_dir / "trainingjobs" / f"{name}{suffix}" / "driver.log"

    def kill_now(self) -> None:
        """SIGKILL every process of every Ray node at once (a second Ctrl-C)."""
        for run in [*self._runs.values(), *self._stopping]:
            for node in run.nodes:
                for pid in _session_pids(node.proc.pid) if node.proc is not None else []:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)

    async def shutdown(self) -> None:
        """Stop every run and wait until every Ray process is gone, those of runs stopped
        earlier (a GPU handed back, a spot move) whose teardown is still going on included."""
        for key in list(self._runs):
            self.stop(key)
        tasks = [r.task for r in self._stopping if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- one run --------------------------------------------------------------------------
    def _set(self, run: _Run, **changes: Any) -> None:
        run.observed = replace(run.observed, **changes)
        if self._runs.get(run.job.key) is run:
            self._on_change(run.job.key)

    async def _execute(self, run: _Run) -> None:
        key = run.job.key
        name = f"attempt-{run.observed.attempt}"
        temp_dir = Path(tempfile.gettempdir()) / "kapell-ray" / _short_id(key, run.observed)
        supervisors: list[asyncio.Task[None]] = []
        try:
            gcs_port, dashboard_port = free_port(), free_port()
            dashboard = f"http://{HOST}:{dashboard_port}"
            head = self._node(run, "head", _head_args(gcs_port, dashboard_port, temp_dir))
            await self._launch(head, run.token)
            await _wait_for_dashboard(dashboard, head)
            for group in run.job.spec.worker_group_specs:
                for index in range(group.replicas):
                    node = self._node(
                        run,
                        f"{group.group_name}-{index}",
                        _worker_args(gcs_port, group.resources.cpu, group.group_name, group.spot),
                    )
                    await self._launch(node, run.token)
                    await _wait_until_started(node)
                    supervisors.append(asyncio.create_task(self._supervise(run, node)))
            self._record(key, name, "ClusterReady", f"dashboard {dashboard}")
            await self._submit_and_follow(run, dashboard)
        except asyncio.CancelledError:
            run.finished = True
            self._record(key, name, "Stopped", "")
            raise
        except Exception as exc:  # Ray failed to start or to take the job: the run failed
            self._set(run, phase=RunPhase.FAILED, message=f"{type(exc).__name__}: {exc}")
        finally:
            run.finished = True
            for task in supervisors:
                task.cancel()
            # A stop that arrives during the teardown must not cut it short: nodes would stay.
            teardown = asyncio.ensure_future(self._teardown(run, supervisors, temp_dir))
            try:
                await asyncio.shield(teardown)
            except asyncio.CancelledError:
                await teardown
                raise
            self._record(key, name, run.observed.phase.value, run.observed.message)
            if self._runs.get(key) is run:
                self._on_change(key)

    async def _teardown(
        self, run: _Run, supervisors: list[asyncio.Task[None]], temp_dir: Path
    ) -> None:
        await asyncio.gather(*supervisors, return_exceptions=True)
        await asyncio.gather(*(_stop_node(n) for n in run.nodes), return_exceptions=True)
        # Ray's own logs go with it; the driver's and the nodes' output stay in log_dir.
        shutil.rmtree(temp_dir, ignore_errors=True)

    async def _submit_and_follow(self, run: _Run, dashboard: str) -> None:
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = await asyncio.to_thread(
            JobSubmissionClient, dashboard, headers={"Authorization": f"Bearer {run.token}"}
        )
        spec = run.job.spec
        entrypoint = spec.entrypoint
        if spec.runtime_env.working_dir:
            entrypoint = f"cd {_quote(spec.runtime_env.working_dir)} && {entrypoint}"
        env_vars = {**spec.runtime_env.env_vars, **run.env.environ()}
        submission_id = f"{run.job.metadata.name}-{run.observed.attempt}-{int(time.time())}"
        deadline = time.monotonic() + HEAD_READY_LIMIT_S
        while True:
            try:
                await asyncio.to_thread(
                    client.submit_job,
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    runtime_env={"env_vars": env_vars},
                )
                break
            except RuntimeError as exc:  # the head's job agent comes up after its dashboard
                if "try again" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(POLL_S)
        self._set(
            run,
            phase=RunPhase.PENDING,
            submission_id=submission_id,
            dashboard_url=dashboard,
            message=f"submitted {submission_id}",
        )
        log = self.log_path(run.job.metadata.namespace, run.job.metadata.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        follower = asyncio.create_task(self._follow_log(run, client, submission_id, log))
        try:
            while True:
                status = await asyncio.to_thread(client.get_job_status, submission_id)
                if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    break
                phase = _RAY_STATUS[str(status.value)]
                if phase is not run.observed.phase:
                    self._set(run, phase=phase, message=f"{submission_id} {status.value}")
                await asyncio.sleep(POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(follower), 10)  # the log's last lines
            info = await asyncio.to_thread(client.get_job_info, submission_id)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        phase = _RAY_STATUS[str(status.value)]
        output = run.env.output_uri if phase is RunPhase.SUCCEEDED else ""
        message = info.message or f"{submission_id} {status.value}"
        self._set(run, phase=phase, message=message, output_uri=output)

    async def _follow_log(self, run: _Run, client: Any, submission_id: str, log: Path) -> None:
        """Append the driver's output to ``log`` and take progress from whole lines."""
        partial = ""
        with log.open("a", encoding="utf-8") as out:
            out.write(f"--- kapell: attempt {run.observed.attempt}, job {submission_id}\n")
            out.flush()
            async for chunk in client.tail_job_logs(submission_id):
                out.write(chunk)
                out.flush()
                *lines, partial = (partial + chunk).split("\n")
                for line in lines:
                    record = parse_progress(line)
                    if record is not None:
                        self._progress(run, record)

    def _progress(self, run: _Run, record: dict[str, Any]) -> None:
        changes = progress_changes(run.observed, record)
        if changes:
            self._set(run, **changes)

    # -- nodes ----------------------------------------------------------------------------
    def _node(self, run: _Run, name: str, args: list[str]) -> _Node:
        job = run.job.metadata
        log = self.log_path(job.namespace, job.name).parent / f"ray-{name}.log"
        node = _Node(name, [sys.executable, "-m", "ray.scripts.scripts", "start", *args], log)
        run.nodes.append(node)
        return node

    async def _launch(self, node: _Node, token: str) -> None:
        """Start the node with the run's own auth token (Ray's token mode): only kapell and
        the cluster's processes can submit to it."""
        node.log.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            **RAY_ENV,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        }
        with node.log.open("ab") as log:
            node.log_offset = log.tell()
            log.write(f"--- kapell: starting {' '.join(node.argv)}\n".encode())
            log.flush()
            node.proc = await asyncio.create_subprocess_exec(
                *node.argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # the node's processes share a group: stopped together
                preexec_fn=die_with_parent,
            )

    async def _supervise(self, run: _Run, node: _Node) -> None:
        """Start a worker node again when it dies while the job runs (spot capacity back)."""
        delay = NODE_BACKOFF_FIRST_S
        while True:
            assert node.proc is not None
            code = await node.proc.wait()
            await _stop_node(node)  # whatever the dead node left in its group
            self._record(run.job.key, node.name, "NodeExited", f"exit code {code}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, NODE_BACKOFF_MAX_S)
            await self._launch(node, run.token)
            self._set(run, worker_restarts=run.observed.worker_restarts + 1)


def _head_args(gcs_port: int, dashboard_port: int, temp_dir: Path) -> list[str]:
    return [
        "--head",
        "--block",
        f"--node-ip-address={HOST}",
        f"--port={gcs_port}",
        f"--dashboard-host={HOST}",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--num-cpus=0",  # the head runs the driver; training runs on worker nodes
        f"--temp-dir={temp_dir}",
        "--include-dashboard=true",
        "--disable-usage-stats",
    ]


def _worker_args(gcs_port: int, cpu: str, group: str, spot: bool) -> list[str]:
    return [
        "--block",
        f"--address={HOST}:{gcs_port}",
        f"--node-ip-address={HOST}",
        f"--num-cpus={max(1, math.ceil(parse_quantity(cpu)))}",
        f"--dashboard-agent-listen-port={free_port()}",
        # One log monitor per host (the head's): the nodes share its session directory, and
        # a monitor per node would forward every worker's lines once per node.
        "--include-log-monitor=false",
        f"--labels=kapell.dev/group={group},kapell.dev/capacity={'spot' if spot else 'on-demand'}",
        "--disable-usage-stats",
    ]


async def _wait_until_started(node: _Node) -> None:
    """Until ``ray start`` says the node runs. Nodes on one machine start one at a time:
    started together, two raylets can pick the same socket name, and one of them dies."""
    deadline = time.monotonic() + HEAD_READY_LIMIT_S
    assert node.proc is not None
    with node.log.open("rb") as log:
        log.seek(node.log_offset)
        seen = b""
        while time.monotonic() < deadline:
            seen = (seen + log.read())[-4096:]
            if RAY_STARTED in seen:
                return
            if node.proc.returncode is not None:
                raise RuntimeError(f"Ray node {node.name} exited; see {node.log}")
            await asyncio.sleep(0.5)
    raise RuntimeError(f"Ray node {node.name} did not start within {HEAD_READY_LIMIT_S:.0f}s")


async def _wait_for_dashboard(url: str, head: _Node) -> None:
    """Until the Job Submission API answers; fails at once if the head exits."""
    deadline = time.monotonic() + HEAD_READY_LIMIT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            assert head.proc is not None
            if head.proc.returncode is not None:
                raise RuntimeError(f"the Ray head exited ({head.proc.returncode}); see {head.log}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/api/version") as response:
                    if response.status in (200, 401):  # 401: up, and asks for Ray's token
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the Ray head did not serve {url} within {HEAD_READY_LIMIT_S:.0f}s")


async def _stop_node(node: _Node) -> None:
    """SIGTERM every process of the node's session, SIGKILL what is left after a grace period.

    By session, not process group: Ray's worker processes put themselves in groups of their
    own, but stay in the session ``ray start`` leads.
    """
    proc = node.proc
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and _session_pids(proc.pid):
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.2)
            else:
                await asyncio.sleep(0.2)
        if not _session_pids(proc.pid):
            break
    if proc.returncode is None:
        await proc.wait()


def _session_pids(sid: int) -> list[int]:
    """Live processes in session ``sid`` (Linux ``/proc``; zombies are already dead)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.append(int(entry.name))
    return pids


def _short_id(key: str, run: TrainingRun) -> str:
    """A short temp-dir name: Ray's socket paths under it must stay within 107 bytes."""
    seed = f"{os.getpid()}/{key}/{run.attempt}/{time.time()}"
    return hashlib.sha256(seed.encode()).hexdigest()[:10]


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
