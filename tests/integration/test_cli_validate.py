"""`kapell validate` as a user runs it: one line per problem, exit codes, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

THREE_ERRORS = (
    Path(__file__).resolve().parents[1] / "data" / "model-three-errors.yaml"
).read_text()


def kapell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kapell.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_three_planted_errors_print_three_lines_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(THREE_ERRORS)
    result = kapell("validate", "-f", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert [line.split(":")[1] for line in lines] == ["4", "9", "11"]
    assert all(line.startswith(f"{bad}:") for line in lines)
    assert "Traceback" not in result.stderr + result.stdout


def test_valid_files_exit_0_with_a_summary() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
    result = kapell("validate", "-f", str(example))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("1 resource(s) valid in 1 file(s): Model")


def test_missing_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = kapell("validate", "-f", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"{tmp_path / 'nope.yaml'}:0: cannot read: No such file or directory"
    )


def test_commands_without_an_instance_say_how_to_start_one(tmp_path: Path) -> None:
    result = kapell("get", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "kapell up -f FILE" in result.stderr and "Traceback" not in result.stderr
