"""Pod status as the node agent writes it: the kubelet's phase rules and condition bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

from kapell.devcluster.podstatus import (
    ContainerObservation,
    PodObservation,
    Running,
    Terminated,
    Waiting,
    pod_phase,
    render,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:09Z"
EXIT_0 = Terminated(0, "Completed", T0, T0)
EXIT_1 = Terminated(1, "Error", T0, T0)


def c(state: Any, last: Terminated | None = None, ready: bool = False) -> ContainerObservation:
    return ContainerObservation("main", "img", state=state, last_state=last, ready=ready)


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": "main", "image": "img"}]},
        "status": status,
    }


@pytest.mark.parametrize(
    ("policy", "containers", "phase"),
    [
        ("Always", [c(Waiting("ContainerCreating"))], "Pending"),
        ("Always", [c(Running(T0)), c(Waiting("ErrImageNeverPull"))], "Pending"),
        ("Always", [c(Running(T0))], "Running"),
        ("Always", [c(Waiting("CrashLoopBackOff"), last=EXIT_1)], "Running"),
        ("Always", [c(EXIT_0)], "Running"),  # about to be restarted
        ("OnFailure", [c(EXIT_0), c(EXIT_0)], "Succeeded"),
        ("OnFailure", [c(EXIT_0), c(Waiting("CrashLoopBackOff"), last=EXIT_1)], "Running"),
        ("Never", [c(EXIT_0), c(Running(T0))], "Running"),
        ("Never", [c(EXIT_0), c(EXIT_1)], "Failed"),
        ("Never", [c(EXIT_0)], "Succeeded"),
        ("Never", [], "Pending"),
    ],
)
def test_phase_follows_the_kubelet(
    policy: str, containers: list[ContainerObservation], phase: str
) -> None:
    assert pod_phase(policy, containers) == phase


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cond["type"]: cond for cond in status["conditions"]}


def test_running_ready_pod_has_every_kubelet_field() -> None:
    obs = PodObservation([c(Running(T0), ready=True)], "127.0.0.1", T0, "10.244.0.2", True)
    status = render(pod(), obs, T1)
    assert status["phase"] == "Running"
    assert (status["podIP"], status["podIPs"]) == ("10.244.0.2", [{"ip": "10.244.0.2"}])
    assert (status["hostIP"], status["hostIPs"]) == ("127.0.0.1", [{"ip": "127.0.0.1"}])
    assert status["startTime"] == T0
    got = {t: cond["status"] for t, cond in conditions(status).items()}
    assert got == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
        "ContainersReady": "True", "PodScheduled": "True",
    }  # fmt: skip
    [container] = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": T0}}
    assert (container["ready"], container["restartCount"], container["lastState"]) == (True, 0, {})


def test_unready_container_is_named_in_ready_condition() -> None:
    obs = PodObservation([c(Running(T0))], "127.0.0.1", T0, "10.244.0.2", True)
    ready = conditions(render(pod(), obs, T1))["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [main]"


def test_no_pod_ip_is_written_before_the_network_exists() -> None:
    obs = PodObservation([c(Waiting("ErrImageNeverPull", "only the engine image"))], "h", T0)
    status = render(pod(), obs, T1)
    assert "podIP" not in status
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImageNeverPull", "message": "only the engine image"}
    }


def test_crash_loop_shows_last_termination_and_restart_count() -> None:
    looping = ContainerObservation(
        "main", "img", Waiting("CrashLoopBackOff", "back-off 10s"), EXIT_1, restart_count=2
    )
    [container] = render(pod(), PodObservation([looping], "h", T0, "ip", True), T1)[
        "containerStatuses"
    ]
    assert container["restartCount"] == 2
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"


def test_transition_time_kept_while_status_unchanged_and_moved_when_it_changes() -> None:
    old = [
        {"type": "Ready", "status": "False", "lastTransitionTime": T0},
        {"type": "Initialized", "status": "True", "lastTransitionTime": T0},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": T0},
    ]
    obs = PodObservation([c(Running(T0), ready=True)], "h", T0, "ip", True)
    got = conditions(render(pod(conditions=old), obs, T1))
    assert got["Initialized"]["lastTransitionTime"] == T0
    assert got["PodScheduled"]["lastTransitionTime"] == T0
    assert got["Ready"]["lastTransitionTime"] == T1


def test_foreign_conditions_are_kept_and_readiness_gates_hold_ready_back() -> None:
    manifest = pod(conditions=[{"type": "example.com/warm", "status": "False"}])
    manifest["spec"]["readinessGates"] = [{"conditionType": "example.com/warm"}]
    obs = PodObservation([c(Running(T0), ready=True)], "h", T0, "ip", True)
    got = conditions(render(manifest, obs, T1))
    assert got["example.com/warm"] == {"type": "example.com/warm", "status": "False"}
    assert got["ContainersReady"]["status"] == "True"
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "ReadinessGatesNotReady")


def test_completed_pod_is_not_ready() -> None:
    manifest = pod()
    manifest["spec"]["restartPolicy"] = "Never"
    obs = PodObservation([c(EXIT_0)], "h", T0, "ip", True)
    status = render(manifest, obs, T1)
    assert status["phase"] == "Succeeded"
    assert conditions(status)["Ready"]["reason"] == "PodCompleted"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
