"""The twin's training backend: TrainingJob runs that take GPUs and make steps on the clock.

A ``TrainingBackend`` (what ``TrainingJobController`` drives) for the serving twin. A run takes
its GPUs from the shared ``SimGpuPool`` (waiting, like a serving replica, until they are
free), pays ``start_s`` (a Ray cluster coming up and the checkpoint loading), then trains at
``steps_per_s``, checkpointing every ``checkpoint.intervalSteps`` steps, until the job's
``total_steps``. A stopped run releases its GPUs ``stop_s`` later (its processes ending); the
steps since its newest checkpoint are lost, and the next run resumes from that checkpoint.
It decides nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from kapell.api import TrainingJob
from kapell.api.training import RunPhase, TrainingRun
from kapell.backends.sim.gpus import SimGpuPool


@dataclass(frozen=True)
class SimTrainingSettings:
    """How a simulated job trains: its length in steps, its speed, its start-up."""

    total_steps: int
    steps_per_s: float
    start_s: float = 60.0
    stop_s: float = 5.0
    """From a stop until the GPUs are free (the local backend's grace before SIGKILL)."""


@dataclass
class _SimRun:
    job_key: str
    revision: str
    attempt: int
    gpus: int
    interval: int
    from_step: int
    held_since_s: float | None = None
    running_since_s: float | None = None
    stopped: bool = False


@dataclass
class SimTrainingStats:
    """What the twin's training did: GPU-seconds held, and steps trained then lost."""

    gpu_seconds: float = 0.0
    steps: int = 0
    lost_steps: int = 0
    runs: int = 0
    checkpoint_step: dict[str, int] = field(default_factory=dict)


class SimTraining:
    """Simulated training runs on the twin's virtual clock, one per job at a time."""

    def __init__(
        self,
        settings: SimTrainingSettings,
        loop: asyncio.AbstractEventLoop,
        gpus: SimGpuPool,
        job_gpus: Callable[[TrainingJob], int],
        on_change: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.stats = SimTrainingStats()
        self._loop = loop
        self._gpus = gpus
        self._job_gpus = job_gpus
        self._on_change = on_change
        self._runs: dict[str, _SimRun] = {}
        self._holders: list[_SimRun] = []

    # -- TrainingBackend ------------------------------------------------------------------
    def run(self, job_key: str) -> TrainingRun | None:
        run = self._runs.get(job_key)
        if run is None:
            return None
        step = self._step(run)
        checkpoint = self._checkpoint(run, step)
        if run.running_since_s is None:
            phase = RunPhase.STARTING
        elif step >= self.settings.total_steps:
            phase = RunPhase.SUCCEEDED
        else:
            phase = RunPhase.RUNNING
        return TrainingRun(
            job_key,
            run.revision,
            run.attempt,
            phase,
            step=step if run.running_since_s is not None else None,
            checkpoints=(checkpoint - run.from_step) // run.interval,
            last_checkpoint_step=checkpoint or None,
            output_uri=f"sim://{job_key}" if phase is RunPhase.SUCCEEDED else "",
        )

    def start(self, job: TrainingJob, revision: str, attempt: int) -> None:
        if job.key in self._runs:
            raise RuntimeError(f"{job.key} already has a run")
        run = _SimRun(
            job.key,
            revision,
            attempt,
            self._job_gpus(job),
            job.spec.checkpoint.interval_steps,
            self.stats.checkpoint_step.get(job.key, 0),
        )
        self._runs[job.key] = run
        self.stats.runs += 1
        self._gpus.acquire(run.gpus, lambda: self._got_gpus(run))

    def hold(self, job: TrainingJob, revision: str, attempt: int) -> None:
        """Nothing to prepare: a held job takes no simulated GPUs until ``start``."""

    def stop(self, job_key: str) -> None:
        run = self._runs.pop(job_key, None)
        if run is None:
            return
        run.stopped = True
        if run.running_since_s is not None:
            step = self._step(run)
            kept = self._checkpoint(run, step)
            self.stats.steps += step - run.from_step
            self.stats.lost_steps += step - kept
            self.stats.checkpoint_step[job_key] = kept
        self._loop.call_later(self.settings.stop_s, self._release, run)

    # -- the clock ------------------------------------------------------------------------
    def _got_gpus(self, run: _SimRun) -> None:
        if run.stopped:
            self._gpus.release(run.gpus)
            return
        run.held_since_s = self._loop.time()
        self._holders.append(run)
        self._loop.call_later(self.settings.start_s, self._started, run)

    def _started(self, run: _SimRun) -> None:
        if run.stopped:
            return
        run.running_since_s = self._loop.time()
        self._on_change(run.job_key)
        left = self.settings.total_steps - run.from_step
        self._loop.call_later(left / self.settings.steps_per_s, self._finished, run)

    def _finished(self, run: _SimRun) -> None:
        if run.stopped:
            return
        self.stats.steps += self.settings.total_steps - run.from_step
        self.stats.checkpoint_step[run.job_key] = self.settings.total_steps
        self._release(run)
        self._on_change(run.job_key)

    def _release(self, run: _SimRun) -> None:
        if run.held_since_s is None:
            return
        self.stats.gpu_seconds += (self._loop.time() - run.held_since_s) * run.gpus
        run.held_since_s = None
        self._holders.remove(run)
        self._gpus.release(run.gpus)

    def _step(self, run: _SimRun) -> int:
        if run.running_since_s is None:
            return run.from_step
        trained = int((self._loop.time() - run.running_since_s) * self.settings.steps_per_s)
        return min(self.settings.total_steps, run.from_step + trained)

    def _checkpoint(self, run: _SimRun, step: int) -> int:
        """The newest checkpoint at ``step`` (the last step always writes one)."""
        if step >= self.settings.total_steps:
            return step
        return run.from_step + (step - run.from_step) // run.interval * run.interval

    def close(self) -> None:
        """At the end of a replay: count the steps of runs still going (not lost: they
        would checkpoint later) and free their GPUs."""
        for run in list(self._runs.values()):
            if run.running_since_s is not None:
                step = self._step(run)
                self.stats.steps += step - run.from_step
                self.stats.checkpoint_step[run.job_key] = step
            run.stopped = True
            self._release(run)
        self._runs.clear()

    def holding(self) -> set[str]:
        """Jobs whose runs hold GPUs now (a stopped run until its GPUs are free)."""
        return {r.job_key for r in self._holders}

    def gpu_seconds(self) -> float:
        """GPU-seconds held so far, the runs holding now included."""
        now = self._loop.time()
        holding = sum(
            (now - r.held_since_s) * r.gpus for r in self._holders if r.held_since_s is not None
        )
        return self.stats.gpu_seconds + holding
