"""What the node agent makes of a container: image check, argv, environment, probes, back-off."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from kapell.api.images import KAPELL_IMAGE, image_repository, is_kapell_image
from kapell.devcluster.podspec import (
    Probe,
    ProbeTally,
    Sources,
    StartError,
    Unrunnable,
    check_image,
    expand,
    parse_probe,
    referenced_sources,
    render_env,
    resolve_argv,
    restart_delay,
    should_restart,
    termination_grace_s,
)

POD: dict[str, Any] = {
    "metadata": {"name": "engine-0", "namespace": "team", "uid": "u-1", "labels": {"app": "m"}},
    "spec": {"nodeName": "gpu-node-0000", "serviceAccountName": "default"},
}


def env_of(container: dict[str, Any], sources: Sources | None = None, **kw: Any) -> dict[str, str]:
    return render_env(
        POD, container, image_env=kw.get("image_env", {"PATH": "/usr/bin", "SECRET_HOST": "x"}),
        sources=sources or Sources(), pod_ip="10.244.0.2", host_ip="127.0.0.1",
        devices=kw.get("devices", {}),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("image", "repository", "engine"),
    [
        (KAPELL_IMAGE, "ghcr.io/kapell-dev/kapell", True),
        ("ghcr.io/kapell-dev/kapell", "ghcr.io/kapell-dev/kapell", True),
        ("ghcr.io/kapell-dev/kapell@sha256:ab12", "ghcr.io/kapell-dev/kapell", True),
        ("localhost:5000/kapell:1", "localhost:5000/kapell", False),
        ("busybox", "busybox", False),
        (
            "ghcr.io/kapell-dev/kapell-extra:1",
            "ghcr.io/kapell-dev/kapell-extra",
            False,
        ),
    ],
)
def test_engine_image_is_recognised_at_any_tag(image: str, repository: str, engine: bool) -> None:
    assert image_repository(image) == repository
    assert is_kapell_image(image) is engine


def test_other_images_cannot_run_and_say_why() -> None:
    check_image({"image": KAPELL_IMAGE})
    with pytest.raises(Unrunnable) as raised:
        check_image({"image": "vllm/vllm-openai:v0.11"})
    assert raised.value.reason == "ErrImageNeverPull"
    assert "vllm/vllm-openai:v0.11" in raised.value.message
    assert KAPELL_IMAGE in raised.value.message


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("--port=$(PORT)", "--port=8000"),
        ("$(PORT)$(PORT)", "80008000"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(PORT)", "$(PORT)"),
        ("cost $5", "cost $5"),
    ],
)
def test_variable_references_expand_like_kubernetes(text: str, expanded: str) -> None:
    assert expand(text, {"PORT": "8000"}) == expanded


def test_env_order_image_then_envfrom_then_env_then_devices() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "PORT", "value": "8000"},
            {"name": "URL", "value": "http://$(POD_IP):$(PORT)"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        ],
    }
    sources = Sources({"cfg": {"level": "debug"}}, {"s": {"token": "t0k"}})
    env = env_of(container, sources, devices={"NVIDIA_VISIBLE_DEVICES": "GPU-1"})
    assert env == {
        "PATH": "/usr/bin",  # an image variable; SECRET_HOST is not one
        "HOSTNAME": "engine-0",
        "CFG_level": "debug",
        "PORT": "8000",
        "URL": "http://$(POD_IP):8000",  # POD_IP is defined after URL, so it stays
        "POD_IP": "10.244.0.2",
        "NS": "team",
        "APP": "m",
        "TOKEN": "t0k",
        "LEVEL": "debug",
        "NVIDIA_VISIBLE_DEVICES": "GPU-1",  # the device injection wins, as CDI's does
    }
    assert referenced_sources(container) == ({"cfg"}, {"s"})


@pytest.mark.parametrize(
    ("var", "says"),
    [
        (
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k"}}},
            "not found",
        ),
        ({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nokey"}}}, "nokey"),
        ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.priority"}}}, "not supported"),
        ({"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, "only"),
    ],
)
def test_unresolvable_env_is_a_config_error(var: dict[str, Any], says: str) -> None:
    with pytest.raises(Unrunnable, match=says) as raised:
        env_of({"env": [var]}, Sources({}, {"s": {"token": "t"}}))
    assert raised.value.reason == "CreateContainerConfigError"


def test_optional_missing_references_are_skipped() -> None:
    container = {
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "no", "key": "k", "optional": True}}}],
        "envFrom": [{"secretRef": {"name": "no", "optional": True}}],
    }  # fmt: skip
    assert "X" not in env_of(container)


@pytest.mark.parametrize("python", ["python", "python3", "python3.11", "/usr/bin/python3"])
def test_python_runs_as_the_agents_interpreter(python: str) -> None:
    container = {"command": [python, "-m", "kapell.engines.sim"], "args": ["--port", "$(PORT)"]}
    argv = resolve_argv(container, {"PORT": "8000"}, sys.executable)
    assert argv == [sys.executable, "-m", "kapell.engines.sim", "--port", "8000"]


def test_other_commands_are_found_on_the_container_path(tmp_path: Path) -> None:
    tool = tmp_path / "serve"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve_argv({"command": ["serve", "-v"]}, {"PATH": str(tmp_path)}, "py") == [
        str(tool), "-v",
    ]  # fmt: skip
    with pytest.raises(StartError, match='"nope": executable file not found'):
        resolve_argv({"command": ["nope"]}, {"PATH": str(tmp_path)}, "py")


def test_no_command_runs_the_images_entrypoint_kapell() -> None:
    argv = resolve_argv({"args": ["gateway", "--port", "$(P)"]}, {"P": "9"}, "/venv/bin/python")
    assert argv == ["/venv/bin/python", "-m", "kapell.cli", "gateway", "--port", "9"]


def test_probe_defaults_and_named_port() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8000}]}
    probe = parse_probe({"httpGet": {"path": "/health", "port": "http"}}, container)
    assert probe == Probe("httpGet", port=8000, path="/health")
    assert (probe.period_s, probe.timeout_s, probe.failure_threshold) == (10.0, 1.0, 3)
    tcp = parse_probe({"tcpSocket": {"port": 9000}, "periodSeconds": 2}, container)
    assert tcp == Probe("tcpSocket", port=9000, period_s=2.0)
    exec_probe = parse_probe({"exec": {"command": ["true"]}}, container)
    assert exec_probe is not None and exec_probe.command == ("true",)
    assert parse_probe(None, container) is None
    with pytest.raises(Unrunnable, match="no container port"):
        parse_probe({"httpGet": {"port": "metrics"}}, container)
    with pytest.raises(Unrunnable, match="only httpGet"):
        parse_probe({"grpc": {"port": 1}}, container)


def test_probe_tally_needs_thresholds_in_a_row() -> None:
    tally = ProbeTally(success_threshold=2, failure_threshold=3)
    assert [tally.record(ok) for ok in (True, False, True, True)] == [False, False, False, True]
    assert [tally.record(ok) for ok in (False, False, True, False, False, False)] == [
        True, True, True, True, True, False,
    ]  # fmt: skip


def test_restart_policy_and_back_off() -> None:
    assert [should_restart(p, 0) for p in ("Always", "OnFailure", "Never")] == [True, False, False]
    assert [should_restart(p, 2) for p in ("Always", "OnFailure", "Never")] == [True, True, False]
    assert [restart_delay(n, 10, 300) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]


def test_termination_grace_from_the_deletion_then_the_spec_capped() -> None:
    assert termination_grace_s({"spec": {}}, 30) == 30
    assert termination_grace_s({"spec": {"terminationGracePeriodSeconds": 5}}, 30) == 5
    assert termination_grace_s({"spec": {"terminationGracePeriodSeconds": 600}}, 30) == 30
    deleting = {"metadata": {"deletionGracePeriodSeconds": 0}, "spec": {}}
    assert termination_grace_s(deleting, 30) == 0
