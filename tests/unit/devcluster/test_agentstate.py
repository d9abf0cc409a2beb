"""The node agent's state file, and cleaning up after an agent that is gone (real processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kapell.devcluster.agentstate import AgentState, PodRecord, clean_up
from kapell.devcluster.processes import start_ticks


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, as the agent starts containers."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    yield child
    child.kill()
    child.wait()


def test_state_round_trips(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    state.pods["u"] = PodRecord(
        "u", "ns", "p", "n0", "10.244.0.2", "kapell-u", "kpu", {"c": (7, 9)}
    )
    state.save()
    again = AgentState(tmp_path)
    assert again.pods == state.pods
    assert again.used_ips() == {"10.244.0.2"}


def test_clean_up_stops_recorded_processes(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    ticks = start_ticks(sleeper.pid)
    assert ticks is not None
    state = AgentState(tmp_path)
    state.pods["u"] = PodRecord("u", "ns", "p", "n0", processes={"c": (sleeper.pid, ticks)})
    state.save()
    assert clean_up(tmp_path, grace_s=5.0) == ["ns/p"]
    sleeper.wait(timeout=5)  # (clean_up reaps its own children, so no exit status is left)
    assert start_ticks(sleeper.pid) is None
    assert AgentState(tmp_path).pods == {}


def test_clean_up_never_signals_a_pid_that_now_is_another_process(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    ticks = start_ticks(sleeper.pid)
    assert ticks is not None
    state = AgentState(tmp_path)
    state.pods["u"] = PodRecord("u", "ns", "p", "n0", processes={"c": (sleeper.pid, ticks - 1)})
    state.save()
    clean_up(tmp_path, grace_s=0.2)
    assert sleeper.poll() is None  # same pid, other start time: left alone


def test_clean_up_without_a_state_file_does_nothing(tmp_path: Path) -> None:
    assert clean_up(tmp_path) == []
    assert not (tmp_path / "node-agent").exists()
