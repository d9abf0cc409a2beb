"""The MCP audit log: records outlive the process that wrote them, one namespace at a time."""

from __future__ import annotations

from pathlib import Path

from kapell.cli.mcp_audit import AuditLog
from kapell.cli.mcp_scope import spec_diff


def test_records_are_read_back_by_a_later_session_of_the_same_namespace(tmp_path: Path) -> None:
    first = AuditLog(tmp_path, "team-a", "agent-one")
    first.record("apply", {"manifest": "..."}, "refused", "refused: other namespace", None)
    AuditLog(tmp_path, "team-b", "other").record("delete", {}, "ok", "", "diff")
    first.record("scale_model", {"name": "chat"}, "dry-run", "", "+  minReplicas: 2\n")
    with first.path.open("a") as out:
        out.write('{"namespace": "team-a", "tool": "torn')  # a write cut short by a crash

    later = AuditLog(tmp_path, "team-a", "agent-two")
    records = later.read(10)
    assert [(r["tool"], r["outcome"], r["agent"]) for r in records] == [
        ("apply", "refused", "agent-one"),
        ("scale_model", "dry-run", "agent-one"),
    ]
    assert later.read(1)[0]["diff"] == "+  minReplicas: 2\n"
    assert later.session != first.session


def test_a_spec_diff_names_the_change_and_says_when_there_is_none() -> None:
    diff = spec_diff("Model/a/m", {"scaling": {"minReplicas": 1}}, {"scaling": {"minReplicas": 2}})
    assert "-  minReplicas: 1\n+  minReplicas: 2\n" in diff
    assert spec_diff("Model/a/m", {"x": 1}, {"x": 1}) == "(no change)\n"
    assert "+x: 1" in spec_diff("Model/a/m", None, {"x": 1})
