"""`kapell dev cluster up` / `down` from the command line: it starts, it answers, it leaves nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kapell.devcluster.processes import processes_mentioning

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


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""
