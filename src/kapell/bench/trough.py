"""``kapell sim trough``: training in the serving fleet's troughs, measured in the twin.

Two replays of one trace under one autoscaler, on a pool of ``pool_gpus`` the serving fleet
owns: serving alone, then serving with an opportunistic TrainingJob that borrows the GPUs the
fleet leaves idle. The second replay runs the production TrainingJob controller beside the
Model controller, with the ``TroughArbiter`` fed by the ``PolicyScaler``'s decisions, on
simulated training runs (``backends.sim.training``) that share the pool with the replicas: a
replica the autoscaler asks for while the job still holds the GPUs starts only once the job
has released them. Reported: serving's SLO attainment in both replays, and the training
GPU-hours gained (held, and kept after the steps lost at hand-backs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kapell.api import TrainingJob
from kapell.backends.sim.training import SimTrainingSettings
from kapell.bench.serving import ServeOptions, replay, summarize
from kapell.bench.traces import Trace
from kapell.bench.twin_replay import TroughTwin, TwinRun

LABEL = "kapell@gpu"
"""The autoscaler both replays use: kapell's, on whole GPUs (a pool counts GPUs)."""


@dataclass(frozen=True)
class TroughOptions:
    """The pool and the opportunistic job."""

    pool_gpus: int
    job_gpus: int = 1
    reserve_gpus: int = 1
    steps_per_s: float = 1.0
    checkpoint_steps: int = 60
    start_s: float = 60.0
    stop_s: float = 5.0


def trough_job(options: TroughOptions, total_steps: int) -> TrainingJob:
    """The opportunistic TrainingJob: ``job_gpus`` one-GPU workers."""
    return TrainingJob.model_validate({
        "metadata": {"name": "trough"},
        "spec": {
            "entrypoint": f"simulated: {total_steps} steps",
            "opportunistic": True,
            "workerGroupSpecs": [
                {"groupName": "gpu", "replicas": options.job_gpus, "resources": {"gpu": {"count": 1}}}
            ],
            "checkpoint": {"intervalSteps": options.checkpoint_steps},
        },
    })  # fmt: skip


def trough_report(
    trace: Trace,
    serve: ServeOptions,
    options: TroughOptions,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Both replays' numbers (see the module doc)."""
    serve = replace(serve, max_replicas=options.pool_gpus)
    knob = serve.knobs.get("kapell")

    def bound(step: str) -> Callable[[float], None] | None:
        return None if progress is None else (lambda f: progress(step, f))

    alone, measured_from_s = replay(trace, serve, LABEL, knob, bound("serving alone"))
    # A job longer than the replay: it is still training when the trace ends.
    total_steps = int(options.steps_per_s * 10 * (trace.duration_s + measured_from_s)) + 1
    settings = SimTrainingSettings(
        total_steps, options.steps_per_s, options.start_s, options.stop_s
    )
    trough = TroughTwin(
        options.pool_gpus, trough_job(options, total_steps), settings, options.reserve_gpus
    )
    shared, _ = replay(trace, serve, LABEL, knob, bound("serving + training"), trough=trough)
    end_s = _end_s(alone)
    serving_gpu_h = alone.gpu_seconds_by_window[-1][1] / 3600 if alone.gpu_seconds_by_window else 0
    idle_gpu_h = options.pool_gpus * end_s / 3600 - serving_gpu_h
    return {
        "trace": trace.name,
        "profile": serve.profile,
        "autoscaler": LABEL,
        "pool_gpus": options.pool_gpus,
        "job_gpus": options.job_gpus,
        "reserve_gpus": options.reserve_gpus,
        "checkpoint_every_s": round(options.checkpoint_steps / options.steps_per_s, 1),
        "serving_alone": summarize(alone, serve, measured_from_s),
        "serving_with_training": summarize(shared, serve, measured_from_s),
        "training": _training(shared, options, idle_gpu_h, end_s),
    }


def _end_s(run: TwinRun) -> float:
    return run.gpu_seconds_by_window[-1][0] if run.gpu_seconds_by_window else 0.0


def _training(
    run: TwinRun, options: TroughOptions, idle_gpu_h: float, end_s: float
) -> dict[str, Any]:
    """The job's GPU-hours over the whole replay (pre-roll included, like ``idle``)."""
    stats = run.training
    assert stats is not None
    per_step_gpu_h = options.job_gpus / options.steps_per_s / 3600
    lent_h = stats.gpu_seconds / 3600
    kept = stats.steps - stats.lost_steps
    return {
        "replay_hours": round(end_s / 3600, 4),
        "pool_idle_gpu_hours_serving_alone": round(idle_gpu_h, 4),
        "gpu_hours_lent": round(lent_h, 4),
        "gpu_hours_trained": round(stats.steps * per_step_gpu_h, 4),
        "gpu_hours_kept": round(kept * per_step_gpu_h, 4),
        "gpu_hours_lost_at_hand_backs": round(stats.lost_steps * per_step_gpu_h, 4),
        "share_of_idle_lent": round(lent_h / idle_gpu_h, 4) if idle_gpu_h > 0 else 0.0,
        "runs": stats.runs,
        "steps": stats.steps,
        "final_status_message": str(run.training_status.get("message", "")),
    }
