"""A real `kapell up` in a subprocess, with helpers to wait on it and to check it left nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest


@dataclass
class Instance:
    """A running `kapell up` process and how to reach it."""

    process: subprocess.Popen[str]
    state_dir: Path
    gateway_url: str
    admin_url: str

    def kapell(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kapell.cli", *args, "--state-dir", str(self.state_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.admin_url + "/admin/v1/status", timeout=5) as r:
            return dict(json.loads(r.read()))

    def replicas(self, ready_only: bool = True) -> list[dict[str, Any]]:
        return [r for r in self.status()["replicas"] if r["phase"] == "Ready" or not ready_only]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            assert self.process.poll() is None, f"kapell up exited: {self.process.stderr}"
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.is_running()]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def kapell_up(tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    """Start `kapell up -f SPEC`; waits for `ready` replicas. Stops it (SIGINT) afterwards.

    ``spec=None`` starts it with no -f (resuming the state directory). The state directory is
    ``tmp_path/state``, passed with --state-dir, unless ``state_dir`` names another; with
    ``pass_state_dir=False`` the command gets none and must find ``state_dir`` on its own
    (from ``env``). ``cwd`` is where it runs; ``args`` are added to the command line.
    """
    started: list[Instance] = []

    def start(
        spec: str | None,
        ready: int = 1,
        *,
        state_dir: Path | None = None,
        pass_state_dir: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> Instance:
        state_dir = state_dir or tmp_path / "state"
        argv = [sys.executable, "-m", "kapell.cli", "up", "--port", "0", *args]
        if spec is not None:
            spec_path = tmp_path / "spec.yaml"
            spec_path.write_text(spec)
            argv += ["-f", str(spec_path)]
        if pass_state_dir:
            argv += ["--state-dir", str(state_dir)]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        info_path = state_dir / "instance.json"
        deadline = time.monotonic() + 30
        while not info_path.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "kapell up did not start within 30 s"
            time.sleep(0.05)
        info = json.loads(info_path.read_text())
        instance = Instance(process, state_dir, info["gateway_url"], info["admin_url"])
        started.append(instance)
        instance.wait_for(lambda: len(instance.replicas()) >= ready, 60, f"{ready} ready")
        return instance

    yield start
    for instance in started:
        stop(instance)


def stop(instance: Instance) -> None:
    """SIGINT `kapell up` and check that it stops, leaving no replica behind."""
    if instance.process.poll() is not None:
        return
    children = descendants(instance.process.pid)
    instance.process.send_signal(signal.SIGINT)
    try:
        instance.process.wait(timeout=45)
    except subprocess.TimeoutExpired:
        for process in [*children, psutil.Process(instance.process.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        raise AssertionError("kapell up did not stop on SIGINT within 45 s") from None
    psutil.wait_procs(children, timeout=10)
    assert not [c for c in children if c.is_running()], "replicas left behind"
