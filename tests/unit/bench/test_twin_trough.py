"""Training in a serving trough, in the twin: the production Model and TrainingJob controllers,
the trough arbiter fed by the autoscaler's decisions, sim replicas and a tiny simulated job
sharing one pool of GPUs on the virtual clock.

Quiet traffic, a burst that needs the whole pool, quiet again: the job borrows the idle GPU,
hands it back when the burst comes (its run stopped, the GPU released), and borrows it again
after.
"""

from __future__ import annotations

from tests.unit.bench.test_twin_replay import Req

from kapell.api import Model, ObjectMeta, TrainingJob
from kapell.api.model import ModelSpec
from kapell.backends.sim.training import SimTrainingSettings
from kapell.backends.sim.twin import SimSettings
from kapell.bench.serving import ServeOptions, summarize
from kapell.bench.twin_replay import TroughTwin, Twin, TwinConfig, TwinRun
from kapell.engines.sim.latency import load_profile

PROFILE = load_profile("h100-llama3-8b")
POOL = 3
QUIET_S, BURST_S, AFTER_S = 300.0, 200.0, 500.0


def _traffic() -> list[Req]:
    """1 request/s, then 10/s for the burst, then 1/s again (860 tokens each)."""
    quiet = [Req(float(t), 800, 60) for t in range(int(QUIET_S))]
    burst = [Req(QUIET_S + i / 10, 800, 60) for i in range(int(BURST_S * 10))]
    after = [Req(QUIET_S + BURST_S + t, 800, 60) for t in range(int(AFTER_S))]
    return quiet + burst + after


def _model() -> Model:
    spec = {
        "source": {"uri": "h100-llama3-8b"},
        "engine": {"name": "sim"},
        "scaling": {"minReplicas": 1, "maxReplicas": POOL, "targetTokensPerSecond": 4000.0},
    }
    return Model(metadata=ObjectMeta(name="m"), spec=ModelSpec.model_validate(spec))


def _job() -> TrainingJob:
    return TrainingJob.model_validate({
        "metadata": {"name": "tiny"},
        "spec": {
            "entrypoint": "simulated",
            "opportunistic": True,
            "workerGroupSpecs": [{"replicas": 1, "resources": {"gpu": {"count": 1}}}],
            "checkpoint": {"intervalSteps": 30},
        },
    })  # fmt: skip


def _replay(trough: TroughTwin | None) -> TwinRun:
    config = TwinConfig(SimSettings(PROFILE, cold_start_s=30.0), initial_replicas=1, trough=trough)
    return Twin(config, _traffic(), _model()).replay()


def _held_at(run: TwinRun, start_s: float, end_s: float) -> set[int]:
    return {held for t, held in run.training_timeline if start_s <= t < end_s}


def test_an_opportunistic_job_borrows_the_trough_and_hands_back_for_the_burst() -> None:
    training = SimTrainingSettings(100_000, steps_per_s=1.0, start_s=20.0, stop_s=5.0)
    trough = TroughTwin(POOL, _job(), training, reserve_gpus=0)
    alone, shared = _replay(None), _replay(trough)

    # Serving alone uses the whole pool in the burst and one GPU outside it.
    assert max(held for _, _, held, _ in alone.timeline) == POOL
    # The job holds the idle GPU in the first quiet spell, releases it within its stop time
    # of the autoscaler asking for the whole pool, and borrows it again once the fleet has
    # scaled back down (after the scale-down delay).
    assert _held_at(shared, 60, QUIET_S) == {1}
    wanted = [t for t, _, _, desired in shared.timeline if desired == POOL]
    assert wanted, "serving must still ask for the whole pool"
    assert _held_at(shared, wanted[0] + training.stop_s + 1, wanted[0] + 60) == {0}
    assert 1 in _held_at(shared, QUIET_S + BURST_S + 300, QUIET_S + BURST_S + AFTER_S)
    stats = shared.training
    assert stats is not None and stats.runs == 2 and stats.gpu_seconds > 400
    # The hand-back lost at most the steps since the newest checkpoint (30 steps apart).
    assert 0 < stats.lost_steps <= 30
    # The pool is never oversubscribed: serving's GPUs plus the job's stay within it.
    held_by_job = dict(shared.training_timeline)
    for t, _, serving, _ in shared.timeline:
        earlier = [h for s, h in held_by_job.items() if s <= t]
        assert serving + (earlier[-1] if earlier else 0) <= POOL + 1  # + a stopping run
    # What the burst's replicas waited for the GPU costs serving (almost) nothing.
    options = ServeOptions(profile="h100-llama3-8b")
    slo_alone = summarize(alone, options)["slo_attainment"]
    slo_shared = summarize(shared, options)["slo_attainment"]
    assert slo_shared >= 0.99 and slo_shared >= slo_alone - 0.01
    # The job's status shows what it holds and has borrowed.
    assert shared.training_status["lentGpus"] == 1
    assert float(shared.training_status["lentGpuSeconds"]) > 300  # type: ignore[arg-type]
