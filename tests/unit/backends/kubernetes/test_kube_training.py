"""How a RayJob's status reads as a run of a TrainingJob (KubeRay's two status fields)."""

from __future__ import annotations

from typing import Any

import pytest

from kapell.api.training import RunPhase
from kapell.backends.kubernetes.training import rayjob_view


def _raw(suspend: bool = False, **status: Any) -> dict[str, Any]:
    labels = {
        "kapell.dev/trainingjob": "llm",
        "kapell.dev/revision": "abc",
        "kapell.dev/attempt": "2",
    }
    return {
        "metadata": {"name": "llm-abc-2", "namespace": "team", "labels": labels},
        "spec": {"suspend": suspend},
        "status": status,
    }


@pytest.mark.parametrize(
    ("suspend", "deployment", "job", "phase"),
    [
        (False, "", "", RunPhase.STARTING),
        (False, "Initializing", "", RunPhase.STARTING),
        (True, "", "", RunPhase.PENDING),  # waiting for Kueue or its planned start
        (True, "Suspended", "", RunPhase.PENDING),
        (False, "Running", "PENDING", RunPhase.PENDING),
        (False, "Running", "RUNNING", RunPhase.RUNNING),
        (False, "Complete", "SUCCEEDED", RunPhase.SUCCEEDED),
        (False, "Complete", "FAILED", RunPhase.FAILED),
        (False, "Complete", "STOPPED", RunPhase.FAILED),
        (False, "Complete", "", RunPhase.FAILED),
        (False, "Failed", "RUNNING", RunPhase.FAILED),  # e.g. activeDeadlineSeconds passed
        (False, "ValidationFailed", "", RunPhase.FAILED),
    ],
)
def test_kuberay_status_maps_to_a_run_phase(
    suspend: bool, deployment: str, job: str, phase: RunPhase
) -> None:
    view = rayjob_view(_raw(suspend, jobDeploymentStatus=deployment, jobStatus=job))
    assert view.phase is phase


def test_the_view_keeps_who_the_rayjob_runs_for_and_kuberays_words() -> None:
    view = rayjob_view(
        _raw(jobDeploymentStatus="Failed", message="deadline exceeded", jobId="llm-abc-2-x7")
    )
    assert (view.job, view.revision, view.attempt) == ("llm", "abc", 2)
    assert view.describe() == "RayJob llm-abc-2 Failed: deadline exceeded"
    assert view.job_id == "llm-abc-2-x7"
    assert "suspended" in rayjob_view(_raw(True)).describe()
