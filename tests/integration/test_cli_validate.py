"""`kapell validate` as a user runs it: one line per problem, exit codes, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "kapell up" in result.stderr and "Traceback" not in result.stderr


CANNOT_START = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: simulated}
spec:
  source:
    uri: h100-llama9-1t
  engine: {name: sim}
---
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: local}
spec:
  source: {uri: weights/not-here}
---
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: big}
spec:
  source: {uri: "hf://meta-llama/Llama-3.1-8B"}
  engine:
    name: vllm
"""


def test_what_would_stop_replicas_starting_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """A sim profile that does not exist, weights that are not there, an engine that is not
    installed: known before any replica starts, so `validate` and `apply` refuse them."""
    spec = tmp_path / "models.yaml"
    spec.write_text(CANNOT_START)
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    if shutil.which("vllm", path=env["PATH"]) is not None:
        pytest.skip("vllm is installed here")
    for command in ("validate", "apply"):
        args = [sys.executable, "-m", "kapell.cli", command, "-f", str(spec)]
        if command == "apply":
            args += ["--state-dir", str(tmp_path / "state")]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert [line.split(": ", 2)[:2] for line in lines] == [
            [f"{spec}:6", "spec.source.uri"],
            [f"{spec}:13", "spec.source.uri"],
            [f"{spec}:21", "spec.engine.name"],
        ], result.stderr
        assert "unknown latency profile 'h100-llama9-1t'" in lines[0]
        assert "h100-llama3-8b" in lines[0], "the known profiles are listed"
        assert f"model path {tmp_path / 'weights' / 'not-here'} does not exist" in lines[1]
        assert "engine 'vllm' needs 'vllm' on PATH" in lines[2]
        assert "Traceback" not in result.stderr
