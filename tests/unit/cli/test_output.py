"""Plain CLI output: tables that are never cut, kubectl-style ages, the per-user state dir."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kapell.cli.client import user_state_dir
from kapell.cli.output import age, human_duration, print_table


def test_tables_align_and_cut_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    message = "a condition message far longer than any terminal is wide " * 3
    print_table(["NAME", "AGE", "MESSAGE"], [["a", "5s", message], ["longer-name", "3m", ""]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "NAME          AGE   MESSAGE",
        f"a             5s    {message}".rstrip(),
        "longer-name   3m",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (119, "119s"), (120, "2m"), (192, "3m12s"), (600, "10m"), (179 * 60, "179m"),
     (3 * 3600 + 15 * 60, "3h15m"), (20 * 3600, "20h"), (76 * 3600, "3d4h"), (12 * 86400, "12d"),
     (800 * 86400, "2y70d")],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_age_of_a_timestamp() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert age("2026-01-01T11:59:18Z", now) == "42s"
    assert age("", now) == "<unknown>"
    assert age("2026-01-01T12:00:05Z", now) == "0s"  # a clock a little behind


def test_the_state_dir_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert user_state_dir() == tmp_path / ".local" / "state" / "kapell"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert user_state_dir() == tmp_path / "xdg" / "kapell"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")  # as the XDG spec says
    assert user_state_dir() == tmp_path / ".local" / "state" / "kapell"
