"""`kapell dev cluster up` / `down` from the command line: it starts, it answers, it leaves nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kubeobjects import eventually

from kapell.api.images import ENGINE_IMAGE
from kapell.devcluster import find_bin_dir
from kapell.devcluster.processes import processes_mentioning, start_ticks

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}


def kapell(*args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("kapell")
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=280, check=False
    )


def test_up_starts_every_component_and_down_leaves_no_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    started = kapell("dev", "cluster", "up", "--nodes", "2", "--gpus", "l4:4",
                     "--state-dir", str(state_dir))  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert f"KUBECONFIG={state_dir.resolve() / 'kubeconfig'}" in started.stdout
        running = processes_mentioning(str(state_dir.resolve()))
        names = {Path(_argv0(pid)).name for pid in running}
        assert names >= COMPONENTS
    finally:
        stopped = kapell("dev", "cluster", "down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert set(stopped.stdout.removeprefix("stopped: ").strip().split(", ")) == COMPONENTS
    assert processes_mentioning(str(state_dir.resolve())) == []
    again = kapell("dev", "cluster", "down", "--state-dir", str(state_dir))
    assert "no dev cluster was running" in again.stdout


def test_down_stops_the_node_agent_and_every_pod_process_and_namespace(tmp_path: Path) -> None:
    state_dir = tmp_path / "serving"
    started = kapell("dev", "cluster", "up", "--nodes", "1", "--serving-nodes", "1",
                     "--gpus", "l4:1", "--state-dir", str(state_dir))  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert "serving: gpu-node-0000" in started.stderr
        kubeconfig = state_dir.resolve() / "kubeconfig"
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
            "spec": {"containers": [{
                "name": "main", "image": ENGINE_IMAGE,
                "command": ["python", "-c", "import time; time.sleep(600)"],
            }]},
        }  # fmt: skip
        kubectl = [str(find_bin_dir() / "kubectl"), f"--kubeconfig={kubeconfig}"]
        subprocess.run([*kubectl, "create", "-f", "-"], input=json.dumps(pod), text=True,
                       check=True, capture_output=True, timeout=60)  # fmt: skip

        def container_id() -> str | None:
            done = subprocess.run(
                [*kubectl, "get", "pod", "sleeper", "-o",
                 "jsonpath={.status.containerStatuses[0].containerID}"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            return done.stdout.strip() or None

        pid = int(eventually(container_id, "pod sleeper started", 120).split("://")[1])
        ticks = start_ticks(pid)
        uid = subprocess.run([*kubectl, "get", "pod", "sleeper", "-o", "jsonpath={.metadata.uid}"],
                             capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
        assert ticks is not None and Path(f"/run/netns/kapell-{uid}").exists()
    finally:
        stopped = kapell("dev", "cluster", "down", "--state-dir", str(state_dir))
    assert "node-agent" in stopped.stdout
    assert start_ticks(pid) != ticks, "the pod's process outlived the cluster"
    assert not Path(f"/run/netns/kapell-{uid}").exists()
    assert processes_mentioning(str(state_dir.resolve())) == []


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""
