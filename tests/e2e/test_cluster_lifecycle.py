"""`kapell dev cluster up` / `down` from the command line: it starts, it answers, it leaves nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from kubeobjects import eventually

from kapell.api.images import KAPELL_IMAGE
from kapell.devcluster import find_bin_dir
from kapell.devcluster.processes import (
    ProcessGroup,
    Started,
    is_alive,
    processes_mentioning,
    signal_group_of,
    start_ticks,
)

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}


def alive(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``ticks`` (a zombie is not)."""
    return ticks is not None and is_alive(Started("", pid, ticks))


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
                "name": "main", "image": KAPELL_IMAGE,
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
    assert not alive(pid, ticks), "the pod's process outlived the cluster"
    assert not Path(f"/run/netns/kapell-{uid}").exists()
    assert processes_mentioning(str(state_dir.resolve())) == []


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def test_an_agent_started_after_a_crash_cleans_up_and_finishes_deletions(tmp_path: Path) -> None:
    """SIGKILL the agent, delete one of two pods meanwhile, start a new agent: the deleted pod's
    process and namespace are gone and its deletion completes; the other pod runs again."""
    state_dir = (tmp_path / "crash").resolve()
    started = kapell("dev", "cluster", "up", "--nodes", "1", "--serving-nodes", "1",
                     "--gpus", "l4:1", "--state-dir", str(state_dir))  # fmt: skip
    kubectl = [str(find_bin_dir() / "kubectl"), f"--kubeconfig={state_dir / 'kubeconfig'}"]

    def get(name: str, path: str) -> str:
        done = subprocess.run([*kubectl, "get", "pod", name, "-o", f"jsonpath={path}"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        return done.stdout.strip() if done.returncode == 0 else ""

    def pid_of(name: str, restarts: int) -> int:
        def started() -> bool | None:
            running = get(name, "{.status.containerStatuses[0].state.running}") != ""
            count = get(name, "{.status.containerStatuses[0].restartCount}")
            return True if running and count == str(restarts) else None

        eventually(started, f"pod {name} running with {restarts} restarts", 120)
        return int(get(name, "{.status.containerStatuses[0].containerID}").split("://")[1])

    try:
        assert started.returncode == 0, started.stderr
        for name in ("keep", "gone"):
            pod = {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "main", "image": KAPELL_IMAGE,
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                }]},
            }  # fmt: skip
            subprocess.run([*kubectl, "create", "-f", "-"], input=json.dumps(pod), text=True,
                           check=True, capture_output=True, timeout=60)  # fmt: skip
        keep_pid, gone_pid = pid_of("keep", 0), pid_of("gone", 0)
        keep_ip, gone_uid = get("keep", "{.status.podIP}"), get("gone", "{.metadata.uid}")
        gone_ticks, keep_ticks = start_ticks(gone_pid), start_ticks(keep_pid)

        group = ProcessGroup(state_dir)
        [agent] = [p for p in group.load() if p.name == "node-agent"]
        assert signal_group_of(agent.pid, agent.start_ticks, signal.SIGKILL)
        eventually(lambda: None if is_alive(agent) else True, "the agent killed")
        subprocess.run([*kubectl, "delete", "pod", "gone", "--wait=false"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        assert get("gone", "{.metadata.deletionTimestamp}"), "deleted with no kubelet to finish"
        assert alive(gone_pid, gone_ticks)  # nobody stopped it yet

        group.start("node-agent", [
            sys.executable, "-m", "kapell.devcluster.agent",
            f"--kubeconfig={state_dir / 'kubeconfigs' / 'kapell-node-agent.kubeconfig'}",
            f"--state-dir={state_dir}", "--nodes=gpu-node-0000",
        ])  # fmt: skip
        eventually(lambda: None if get("gone", "{.metadata.name}") else True, "pod gone deleted")
        assert not alive(gone_pid, gone_ticks)
        assert not Path(f"/run/netns/kapell-{gone_uid}").exists()
        new_keep_pid = pid_of("keep", 1)
        assert new_keep_pid != keep_pid and not alive(keep_pid, keep_ticks)
        assert get("keep", "{.status.podIP}") == keep_ip
    finally:
        stopped = kapell("dev", "cluster", "down", "--state-dir", str(state_dir))
    assert "node-agent" in stopped.stdout
    assert processes_mentioning(str(state_dir)) == []
