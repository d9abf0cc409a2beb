"""Host processes of a dev cluster: start them detached, remember them, stop them all.

Each component runs in its own session, so it outlives the ``kapell dev cluster up`` command
that started it and can be signalled as a group. The state file records each pid with the
process start time read from ``/proc``, so ``down`` never signals a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kapell.api.errors import BackendError

_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    start_ticks: int


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot, or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its closing paren are plain.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def is_alive(process: Started) -> bool:
    _reap(process.pid)
    if start_ticks(process.pid) != process.start_ticks:
        return False
    try:
        state = Path(f"/proc/{process.pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


class ProcessGroup:
    """The processes of one cluster, persisted in ``state.json`` inside its state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self._state_file = state_dir / "processes.json"

    def load(self) -> list[Started]:
        if not self._state_file.exists():
            return []
        return [Started(**entry) for entry in json.loads(self._state_file.read_text())]

    def _save(self, processes: Sequence[Started]) -> None:
        self._state_file.write_text(json.dumps([p.__dict__ for p in processes], indent=1))

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Started:
        """Start ``argv`` detached, logging to ``logs/<name>.log``; fail fast if it exits at once."""
        started = self._launch(name, argv, env)
        self._save([*self.load(), started])
        return started

    def _launch(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None) -> Started:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        ticks = start_ticks(child.pid)
        if ticks is None or child.poll() is not None:
            raise BackendError(f"{name} exited at start; see {log_path}")
        return Started(name, child.pid, ticks)

    def restart(self, name: str) -> Started:
        """Stop the component ``name`` (SIGTERM, then SIGKILL) and start it again, same argv."""
        process = self._named(name)
        command = _command_of(process)
        _stop(process)
        return self.relaunch(name, command)

    def crash(self, name: str) -> Command:
        """SIGKILL the component ``name``, as a machine failure would; returns what started it,
        for ``relaunch``."""
        process = self._named(name)
        command = _command_of(process)
        _signal_group(process.pid, signal.SIGKILL)
        while is_alive(process):
            time.sleep(0.05)
        return command

    def relaunch(self, name: str, command: Command) -> Started:
        """Start ``name`` again from ``command``, in its old place in the stop order."""
        started = self._launch(name, command.argv, command.env)
        self._save([started if p.name == name else p for p in self.load()])
        return started

    def _named(self, name: str) -> Started:
        [process] = [p for p in self.load() if p.name == name]
        return process

    def check_running(self) -> None:
        """Raise with the log path of the first component that died."""
        for process in self.load():
            if not is_alive(process):
                raise BackendError(
                    f"{process.name} stopped; see {self.logs / (process.name + '.log')}"
                )

    def stop_all(self) -> list[str]:
        """Stop every recorded process, newest first, each before the next: clients go before
        the apiserver and the apiserver before etcd, so none waits on a peer already gone.
        SIGTERM, then SIGKILL after a grace period."""
        stopped = []
        for process in reversed(self.load()):
            if not is_alive(process):
                continue
            _stop(process)
            stopped.append(process.name)
        self._state_file.unlink(missing_ok=True)
        return stopped


@dataclass(frozen=True)
class Command:
    """How a component was started: its argv and environment."""

    argv: list[str]
    env: dict[str, str]


def _command_of(process: Started) -> Command:
    argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    environ = Path(f"/proc/{process.pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
    return Command([a.decode() for a in argv], env)


def _stop(process: Started) -> None:
    """SIGTERM the process group, SIGKILL it after the grace period; return once it is gone."""
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while is_alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_alive(process):
        _signal_group(process.pid, signal.SIGKILL)
    while is_alive(process):
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (the fixture's case), else nothing."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def signal_group_of(pid: int, ticks: int, sig: signal.Signals | None) -> bool:
    """Signal the process group led by ``pid`` if that pid is still the process that started at
    ``ticks`` (and not a zombie); whether it was. ``sig`` None only checks."""
    if not is_alive(Started("", pid, ticks)):
        return False
    if sig is not None:
        _signal_group(pid, sig)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def processes_mentioning(text: str) -> list[int]:
    """Pids of every other process whose command line contains ``text`` (for leak checks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found
