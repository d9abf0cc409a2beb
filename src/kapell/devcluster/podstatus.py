"""Pod status as a kubelet reports it, rendered from what the agent observed.

Pure: the agent keeps a :class:`PodObservation` per pod and writes :func:`render` through the
pod's status subresource (a JSON merge patch, so fields written by others, such as
``resourceClaimStatuses``, stay). The phase follows the kubelet's rules; conditions keep their
``lastTransitionTime`` while their status does not change; conditions of other types (readiness
gates, ``DisruptionTarget`` ...) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: str


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: str
    finished_at: str
    message: str = ""


State = Waiting | Running | Terminated


@dataclass
class ContainerObservation:
    name: str
    image: str
    state: State = field(default_factory=lambda: Waiting("ContainerCreating"))
    last_state: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""


@dataclass
class PodObservation:
    containers: list[ContainerObservation]
    host_ip: str
    start_time: str
    pod_ip: str = ""
    sandbox_ready: bool = False


def _state(state: State | None, container_id: str) -> Json:
    match state:
        case None:
            return {}
        case Waiting(reason, message):
            return {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        case Running(started_at):
            return {"running": {"startedAt": started_at}}
        case Terminated(exit_code, reason, started_at, finished_at, message):
            terminated: Json = {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": finished_at,
            }
            if message:
                terminated["message"] = message
            if container_id:
                terminated["containerID"] = container_id
            return {"terminated": terminated}
    raise AssertionError(state)


def container_status(c: ContainerObservation) -> Json:
    status: Json = {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": c.ready,
        "started": c.started,
        "restartCount": c.restart_count,
        "state": _state(c.state, c.container_id),
        "lastState": _state(c.last_state, ""),
    }
    if c.container_id:
        status["containerID"] = c.container_id
    return status


def pod_phase(restart_policy: str, containers: list[ContainerObservation]) -> str:
    """The kubelet's phase: Pending until every container has started once, then Running while
    any runs or will be restarted, then Succeeded or Failed by exit codes and restart policy."""
    waiting = running = stopped = succeeded = 0
    for c in containers:
        match c.state:
            case Running():
                running += 1
            case Terminated(exit_code):
                stopped += 1
                succeeded += exit_code == 0
            case Waiting():
                if c.last_state is None:
                    waiting += 1
                else:  # waiting to restart: counts as stopped, like the kubelet
                    stopped += 1
                    succeeded += c.last_state.exit_code == 0
    if waiting or not containers:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if restart_policy == "OnFailure":
        return "Succeeded" if stopped == succeeded else "Running"
    return "Succeeded" if stopped == succeeded else "Failed"


def _condition(type_: str, ok: bool, reason: str = "", message: str = "") -> Json:
    condition: Json = {"type": type_, "status": "True" if ok else "False"}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _readiness(pod: Mapping[str, Any], obs: PodObservation, phase: str) -> tuple[Json, Json]:
    """(ContainersReady, Ready)."""
    if phase in ("Succeeded", "Failed"):
        done = _condition("ContainersReady", False, "PodCompleted")
        return done, {**done, "type": "Ready"}
    unready = [c.name for c in obs.containers if not c.ready]
    if unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
        containers = _condition("ContainersReady", False, "ContainersNotReady", message)
        return containers, {**containers, "type": "Ready"}
    existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    for gate in pod.get("spec", {}).get("readinessGates") or []:
        gate_type = gate["conditionType"]
        if existing.get(gate_type, {}).get("status") != "True":
            message = f'corresponding condition of pod readiness gate "{gate_type}" is not True'
            return _condition("ContainersReady", True), _condition(
                "Ready", False, "ReadinessGatesNotReady", message
            )
    return _condition("ContainersReady", True), _condition("Ready", True)


_OWNED = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def conditions(pod: Mapping[str, Any], obs: PodObservation, phase: str, now: str) -> list[Json]:
    existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    containers_ready, ready = _readiness(pod, obs, phase)
    scheduled = existing.get("PodScheduled") or _condition("PodScheduled", True)
    fresh = [
        _condition("PodReadyToStartContainers", obs.sandbox_ready),
        _condition("Initialized", True),
        ready,
        containers_ready,
        {k: v for k, v in scheduled.items() if k != "lastTransitionTime"},
    ]
    out = []
    for condition in fresh:
        old = existing.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"]
        since = old.get("lastTransitionTime") if same and old else None
        out.append({**condition, "lastTransitionTime": since or now})
    out.extend(c for t, c in existing.items() if t not in _OWNED)
    return out


def render(pod: Mapping[str, Any], obs: PodObservation, now: str) -> Json:
    """The ``status`` to merge into the pod."""
    phase = pod_phase(pod.get("spec", {}).get("restartPolicy", "Always"), obs.containers)
    status: Json = {
        "phase": phase,
        "conditions": conditions(pod, obs, phase, now),
        "hostIP": obs.host_ip,
        "hostIPs": [{"ip": obs.host_ip}],
        "startTime": obs.start_time,
        "containerStatuses": [container_status(c) for c in obs.containers],
    }
    if obs.pod_ip:
        status["podIP"] = obs.pod_ip
        status["podIPs"] = [{"ip": obs.pod_ip}]
    return status
