"""What the node agent has made on this machine, kept in a file so nothing outlives it unseen.

For each pod: its network namespace, host veth, address, and the pid and start time of each
container process. The agent writes the file before it makes a thing and after it removes one,
so a record may name what does not exist, never the other way round. After an agent dies (or
before a new one starts, or at ``kapell dev cluster down``) :func:`clean_up` removes every
recorded thing; a pid is signalled only if its start time still matches the record.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kapell.devcluster import podnet
from kapell.devcluster.pki import SERVICE_IP
from kapell.devcluster.processes import signal_group_of

STATE_FILE = Path("node-agent") / "state.json"


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    node: str
    ip: str = ""
    netns: str = ""
    veth: str = ""
    processes: dict[str, tuple[int, int]] = field(default_factory=dict)  # container -> pid, ticks


class AgentState:
    """The state file of one dev cluster's node agent."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.pods: dict[str, PodRecord] = {}
        if self.path.exists():
            for entry in json.loads(self.path.read_text()).get("pods", []):
                processes = {k: (v[0], v[1]) for k, v in entry.pop("processes", {}).items()}
                self.pods[entry["uid"]] = PodRecord(**entry, processes=processes)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"pods": [asdict(p) for p in self.pods.values()]}, indent=1)
        )
        os.replace(temporary, self.path)

    def used_ips(self) -> set[str]:
        return {p.ip for p in self.pods.values() if p.ip}


def stop_processes(processes: list[tuple[int, int]], grace_s: float) -> None:
    """SIGTERM each process group whose leader is still the recorded process, SIGKILL after
    ``grace_s``. For processes that are not this process's children (a former agent's)."""
    alive = [p for p in processes if signal_group_of(*p, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if signal_group_of(*p, None)]
    for pid, ticks in alive:
        signal_group_of(pid, ticks, signal.SIGKILL)


def clean_up(state_dir: Path, grace_s: float = 5.0) -> list[str]:
    """Stop every recorded process and remove every recorded namespace and veth (and the
    apiserver's service address, see ``apiproxy``); returns the
    ``namespace/name`` of the pods that had something left. Safe to call when nothing is."""
    state = AgentState(state_dir)
    cleaned = []
    stop_processes([p for r in state.pods.values() for p in r.processes.values()], grace_s)
    for record in state.pods.values():
        if record.netns or record.veth:
            podnet.delete(record.netns, record.veth)
        cleaned.append(f"{record.namespace}/{record.name}")
    state.pods.clear()
    if state.path.exists():  # an agent ran: it may have died holding the apiserver's address
        state.save()
        podnet.remove_local_address(SERVICE_IP)
    return cleaned
