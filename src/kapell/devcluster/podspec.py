"""What a serving node makes of a pod's spec: each container's argv, environment and probes.

Pure functions over the pod as the API returns it (a dict). A container that cannot run here
raises :class:`Unrunnable` with the waiting reason a kubelet would report.

kapell's image (``kapell.api.images``) stands for this machine's Python environment: a command
whose first word is ``python`` (``python3``, ``python3.11`` ...) runs with the agent's own
interpreter; another first word is looked up on the container's ``PATH``; no command runs the
image's entrypoint, ``kapell``. Any other image cannot run, since there is no container runtime.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kapell.api.images import KAPELL_IMAGE, is_kapell_image

Pod = dict[str, Any]
Container = dict[str, Any]

IMAGE_ENV_KEYS = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "HOME", "LANG", "LC_ALL", "TZ")
"""Variables of the agent's environment that kapell's image "has" (Python must find kapell)."""

_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class Unrunnable(Exception):
    """A container that cannot start; ``reason`` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_image(container: Container) -> None:
    image = container.get("image", "")
    if not is_kapell_image(image):
        raise Unrunnable(
            "ErrImageNeverPull",
            f"image {image!r} cannot run on a kapell dev serving node: only kapell's image "
            f"({KAPELL_IMAGE}, any tag) runs there, as this machine's Python environment",
        )


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, unknown ones kept as written,
    ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


@dataclass(frozen=True)
class Sources:
    """ConfigMaps and Secrets of the pod's namespace that its containers name (name -> data);
    a name that does not exist is absent."""

    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def referenced_sources(container: Container) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a container's env and envFrom read."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            config_maps.add(source["configMapRef"]["name"])
        if "secretRef" in source:
            secrets.add(source["secretRef"]["name"])
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            config_maps.add(value_from["configMapKeyRef"]["name"])
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"]["name"])
    return config_maps, secrets


_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _field_ref(pod: Pod, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    labelled = _LABEL_REF.match(path)
    if labelled:
        return str((meta.get(labelled.group(1)) or {}).get(labelled.group(2), ""))
    raise Unrunnable("CreateContainerConfigError", f"fieldRef {path!r} is not supported here")


def _key_ref(
    kind: str, ref: Mapping[str, Any], found: Mapping[str, Mapping[str, str]]
) -> str | None:
    data = found.get(ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise Unrunnable("CreateContainerConfigError", f'{kind} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise Unrunnable(
            "CreateContainerConfigError", f"couldn't find key {ref['key']} in {kind} {ref['name']}"
        )
    return data[ref["key"]]


def render_env(
    pod: Pod,
    container: Container,
    *,
    image_env: Mapping[str, str],
    sources: Sources,
    pod_ip: str,
    host_ip: str,
    devices: Mapping[str, str],
) -> dict[str, str]:
    """The process environment, in the kubelet's order: the image's variables, ``HOSTNAME``,
    ``envFrom``, ``env`` (each value expanded against what came before), then the device
    variables a CDI spec would inject, which win."""
    spec = pod.get("spec", {})
    env = {k: v for k, v in image_env.items() if k in IMAGE_ENV_KEYS}
    env["HOSTNAME"] = spec.get("hostname") or pod["metadata"]["name"]
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, kind, found = source["configMapRef"], "configmap", sources.config_maps
        else:
            ref, kind, found = source["secretRef"], "secret", sources.secrets
        data = found.get(ref["name"])
        if data is None and not ref.get("optional"):
            raise Unrunnable("CreateContainerConfigError", f'{kind} "{ref["name"]}" not found')
        env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        value_from = var.get("valueFrom")
        value: str | None
        if value_from is None:
            value = expand(var.get("value", ""), env)
        elif "fieldRef" in value_from:
            value = _field_ref(pod, value_from["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "configMapKeyRef" in value_from:
            value = _key_ref("configmap", value_from["configMapKeyRef"], sources.config_maps)
        elif "secretKeyRef" in value_from:
            value = _key_ref("secret", value_from["secretKeyRef"], sources.secrets)
        else:
            raise Unrunnable(
                "CreateContainerConfigError",
                f"env {var['name']}: only value, fieldRef, configMapKeyRef and secretKeyRef "
                "are supported here",
            )
        if value is not None:
            env[var["name"]] = value
    env.update(devices)
    return env


def resolve_argv(container: Container, env: Mapping[str, str], python: str) -> list[str]:
    """``command`` + ``args`` expanded, with ``python*`` mapped to the agent's interpreter and
    any other first word resolved on the container's PATH. No command runs the image's
    entrypoint, ``kapell``, as the agent's interpreter's ``-m kapell.cli`` (whatever PATH is)."""
    args = [expand(word, env) for word in container.get("args") or []]
    if not container.get("command"):
        return [python, "-m", "kapell.cli", *args]
    command = [expand(word, env) for word in container["command"]]
    first = command[0]
    if _PYTHON.match(first.rsplit("/", 1)[-1]):
        return [python, *command[1:], *args]
    if "/" not in first:
        found = shutil.which(first, path=env.get("PATH", ""))
        if found is None:
            raise StartError(f'exec: "{first}": executable file not found in $PATH')
        return [found, *command[1:], *args]
    return [*command, *args]


class StartError(Exception):
    """The process could not be started (the kubelet reports exit code 128, reason StartError)."""


ProbeKind = Literal["httpGet", "tcpSocket", "exec"]


@dataclass(frozen=True)
class Probe:
    """A container probe as the kubelet runs it, with the API's defaults filled in."""

    kind: ProbeKind
    port: int = 0
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


def _port(value: int | str, container: Container) -> int:
    if isinstance(value, int) or value.isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise Unrunnable(
        "CreateContainerConfigError", f"probe port {value!r}: no container port of that name"
    )


def parse_probe(probe: Mapping[str, Any] | None, container: Container) -> Probe | None:
    if not probe:
        return None
    timing = Probe(
        "exec",
        initial_delay_s=float(probe.get("initialDelaySeconds", 0)),
        period_s=float(max(1, probe.get("periodSeconds", 10))),
        timeout_s=float(max(1, probe.get("timeoutSeconds", 1))),
        success_threshold=int(probe.get("successThreshold", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
    )
    if "httpGet" in probe:
        http = probe["httpGet"]
        return replace(
            timing,
            kind="httpGet",
            port=_port(http["port"], container),
            path=http.get("path", "/"),
            host=http.get("host", ""),
            scheme=http.get("scheme", "HTTP"),
            headers=tuple((h["name"], h["value"]) for h in http.get("httpHeaders") or []),
        )
    if "tcpSocket" in probe:
        tcp = probe["tcpSocket"]
        port = _port(tcp["port"], container)
        return replace(timing, kind="tcpSocket", port=port, host=tcp.get("host", ""))
    if "exec" in probe:
        return replace(timing, command=tuple(probe["exec"].get("command") or []))
    raise Unrunnable(
        "CreateContainerConfigError", "only httpGet, tcpSocket and exec probes run here"
    )


@dataclass
class ProbeTally:
    """Consecutive results against the thresholds: ``passing`` flips after ``success_threshold``
    successes in a row, back after ``failure_threshold`` failures in a row."""

    success_threshold: int
    failure_threshold: int
    passing: bool = False
    _streak: int = 0  # successes (>0) or failures (<0) in a row

    def record(self, ok: bool) -> bool:
        if ok:
            self._streak = max(self._streak, 0) + 1
            if self._streak >= self.success_threshold:
                self.passing = True
        else:
            self._streak = min(self._streak, 0) - 1
            if -self._streak >= self.failure_threshold:
                self.passing = False
        return self.passing


RestartPolicy = Literal["Always", "OnFailure", "Never"]


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def restart_delay(crashes_in_a_row: int, base_s: float, cap_s: float) -> float:
    """The kubelet's crash back-off: base, twice that, four times ... capped."""
    if crashes_in_a_row < 1:
        return 0.0
    return float(min(cap_s, base_s * 2 ** (crashes_in_a_row - 1)))


def termination_grace_s(pod: Pod, cap_s: float) -> float:
    """Seconds between SIGTERM and SIGKILL: what the deletion asked for, else the spec's."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return float(min(cap_s, max(0, grace)))
