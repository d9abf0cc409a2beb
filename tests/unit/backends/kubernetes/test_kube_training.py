"""How a RayJob's status reads as a run of a TrainingJob (KubeRay's two status fields)."""

from __future__ import annotations

from typing import Any

import pytest

from kapell.api.training import RunPhase
from kapell.backends.kubernetes.training import rayjob_view


def _raw(suspend: bool = False, held: bool = False, **status: Any) -> dict[str, Any]:
    labels = {
        "kapell.dev/trainingjob": "llm",
        "kapell.dev/revision": "abc",
        "kapell.dev/attempt": "2",
        "kapell.dev/restart": "1",
    }
    if held:
        labels["kapell.dev/held"] = "true"
    return {
        "metadata": {"name": "llm-abc-2", "namespace": "team", "labels": labels},
        "spec": {"suspend": suspend},
        "status": status,
    }


@pytest.mark.parametrize(
    ("suspend", "held", "deployment", "job", "phase"),
    [
        (False, False, "", "", RunPhase.STARTING),
        (False, False, "Initializing", "", RunPhase.STARTING),
        (True, False, "", "", RunPhase.PENDING),  # waiting for Kueue's admission
        (True, False, "Suspended", "", RunPhase.PENDING),
        (True, True, "", "", RunPhase.HELD),  # kapell's: until its planned start
        (True, True, "Suspended", "", RunPhase.HELD),
        (False, True, "Running", "RUNNING", RunPhase.RUNNING),  # released; label not yet gone
        (False, False, "Running", "PENDING", RunPhase.PENDING),
        (False, False, "Running", "RUNNING", RunPhase.RUNNING),
        (False, False, "Complete", "SUCCEEDED", RunPhase.SUCCEEDED),
        (False, False, "Complete", "FAILED", RunPhase.FAILED),
        (False, False, "Complete", "STOPPED", RunPhase.FAILED),
        (False, False, "Complete", "", RunPhase.FAILED),
        (False, False, "Failed", "RUNNING", RunPhase.FAILED),  # activeDeadlineSeconds passed
        (False, False, "ValidationFailed", "", RunPhase.FAILED),
    ],
)
def test_kuberay_status_maps_to_a_run_phase(
    suspend: bool, held: bool, deployment: str, job: str, phase: RunPhase
) -> None:
    view = rayjob_view(_raw(suspend, held, jobDeploymentStatus=deployment, jobStatus=job))
    assert view.phase is phase


def test_the_view_keeps_who_the_rayjob_runs_for_and_kuberays_words() -> None:
    view = rayjob_view(
        _raw(jobDeploymentStatus="Failed", message="deadline exceeded", jobId="llm-abc-2-x7")
    )
    assert (view.job, view.revision, view.attempt, view.restart) == ("llm", "abc", 2, 1)
    assert view.describe() == "RayJob llm-abc-2 Failed: deadline exceeded"
    assert view.job_id == "llm-abc-2-x7"
    assert rayjob_view(_raw(True)).describe().endswith("suspended: waiting for admission")
    held = rayjob_view(_raw(True, held=True)).describe()
    assert held.endswith("suspended: held until its planned start")
