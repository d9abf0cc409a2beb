"""The TrainingJob schema and the contract between kapell and a training entrypoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapell.api import Model, TrainingJob
from kapell.api.errors import SpecError
from kapell.api.jobenv import JobEnv, parse_progress, progress_line
from kapell.api.loader import load_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-shakespeare.yaml"

BAD_JOB = """\
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: t}
spec:
  entrypoint: python train.py
  workerGroupSpecs: []
  checkpoint:
    uri: gs://bucket/run
    intervalSteps: 0
"""


def test_the_example_loads_a_job_and_a_model_that_serves_its_output() -> None:
    job, model = load_text(EXAMPLE.read_text(), str(EXAMPLE))
    assert isinstance(job, TrainingJob) and isinstance(model, Model)
    assert job.spec.workers == 2 and job.spec.checkpoint.interval_steps == 25
    assert [g.group_name for g in job.spec.worker_group_specs] == ["cpu"]
    assert model.spec.source.uri == "trainingjob://shakespeare"
    assert model.spec.source.scheme == "trainingjob"


def test_bad_fields_are_reported_by_line() -> None:
    with pytest.raises(SpecError) as info:
        load_text(BAD_JOB, "job.yaml")
    lines = [str(p) for p in info.value.problems]
    assert len(lines) == 3, lines
    assert lines[0].startswith("job.yaml:6: spec.workerGroupSpecs:")
    assert lines[1].startswith("job.yaml:8: spec.checkpoint.uri:") and "s3://" in lines[1]
    assert lines[2].startswith("job.yaml:9: spec.checkpoint.intervalSteps:")


def test_a_trainingjob_source_names_a_job() -> None:
    text = EXAMPLE.read_text().replace("trainingjob://shakespeare", "trainingjob://Not_A_Name")
    with pytest.raises(SpecError) as info:
        load_text(text, "x.yaml")
    assert "expected trainingjob://NAME" in str(info.value.problems[0])


def test_job_environment_round_trips() -> None:
    env = JobEnv("t", 2, 1.0, "/ckpt", 25, "/ckpt/t/model", 3)
    assert JobEnv.from_environ(env.environ()) == env
    with pytest.raises(KeyError, match="KAPELL_JOB_NAME"):
        JobEnv.from_environ({})


def test_progress_lines_are_found_behind_rays_prefix() -> None:
    line = "\x1b[36m(RayTrainWorker pid=7)\x1b[0m " + progress_line(step=3, loss=2.5)
    assert parse_progress(line) == {"step": 3, "loss": 2.5}
    interleaved = progress_line(step=4) + "2026-12-02 08:00:00 WARNING from another thread"
    assert parse_progress(interleaved) == {"step": 4}
    assert parse_progress("step 3 loss 2.5") is None
    assert parse_progress("kapell-progress {not json") is None
