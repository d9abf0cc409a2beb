"""The audit log of ``kapell mcp``: one JSON line per tool call, in the instance's state dir.

Who called (the ``--agent`` label and the server's session id), which tool with which
arguments, the diff it made or would make, and the outcome (``ok``, ``refused`` or
``error``, with the message). A file of appended lines survives restarts of both the MCP
server and ``kapell up``, and a person reads it with ``jq`` as easily as an agent with the
``read_audit`` tool.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

AUDIT_FILE = "mcp-audit.jsonl"


class AuditLog:
    """Appends a record per call; reads back one namespace's latest records."""

    def __init__(self, state_dir: Path, namespace: str, agent: str) -> None:
        self.path = state_dir / AUDIT_FILE
        self.namespace = namespace
        self.agent = agent
        self.session = uuid.uuid4().hex[:12]

    def record(
        self, tool: str, arguments: dict[str, Any], outcome: str, message: str, diff: str | None
    ) -> None:
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "namespace": self.namespace,
            "agent": self.agent,
            "session": self.session,
            "pid": os.getpid(),
            "tool": tool,
            "arguments": arguments,
            "outcome": outcome,
            "message": message,
            "diff": diff,
        }
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def read(self, limit: int) -> list[dict[str, Any]]:
        """This namespace's last ``limit`` records, oldest first (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("namespace") == self.namespace:
                found.append(entry)
        return found[-limit:] if limit > 0 else []
