"""The local CLI the way kubectl and docker users expect it, against a real `kapell up`.

The instance is found from any directory, `up` resumes saved state, replica ids never repeat
across runs, `logs -f` follows, each model has an access log, `describe` shows conditions and
events, `get` has AGE and `-o wide` and cuts nothing when piped, and `chat` holds a
conversation read from stdin.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import openai
import pytest

from kapell.observe.access_log import parse_line
from tests.integration.local.conftest import Instance, stop
from tests.integration.local.test_local_backend import StartFn, client, spec


def kapell(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kapell.cli", *args],
        capture_output=True, text=True, timeout=60, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


class Lines:
    """The lines of a child's output pipe as they come (read by a thread, so never blocks)."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self, timeout_s: float) -> str:
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout_s}s") from None


def chat_once(instance: Instance, stream: bool = False) -> None:
    reply = client(instance).chat.completions.create(
        model="chat", max_tokens=5, stream=stream, messages=[{"role": "user", "content": "hi"}]
    )
    if stream:
        list(reply)  # type: ignore[call-overload]


def test_up_prints_the_gateway_url_at_once_even_with_no_ready_replica(
    kapell_up: StartFn,
) -> None:
    instance = kapell_up(spec(0), 0)
    first = Lines(instance.process.stdout).next(10)
    assert first.startswith(f"Gateway: {instance.gateway_url} "), first
    assert not instance.gateway_url.endswith(":0")
    assert instance.replicas(ready_only=False) == []
    shown = instance.kapell("status")
    assert shown.returncode == 0 and f"gateway: {instance.gateway_url}" in shown.stdout


def test_the_instance_is_found_from_any_directory(kapell_up: StartFn, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("KAPELL_STATE_DIR", "XDG_STATE_HOME")}
    env["HOME"] = str(home)
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    instance = kapell_up(
        spec(1), 1, state_dir=home / ".local" / "state" / "kapell", pass_state_dir=False,
        env=env, cwd=tmp_path / "here",
    )  # fmt: skip
    got = kapell("get", env=env, cwd=tmp_path / "elsewhere")
    assert got.returncode == 0, got.stderr
    assert re.search(r"^chat\s+sim\s+1/1", got.stdout, re.M), got.stdout
    # KAPELL_STATE_DIR names the directory too, and an explicit --state-dir wins over both.
    env["KAPELL_STATE_DIR"] = str(instance.state_dir)
    assert kapell("status", env={**env, "HOME": "/nonexistent"}).returncode == 0
    missing = kapell("get", "--state-dir", str(tmp_path / "none"), env=env)
    assert missing.returncode == 1 and "no kapell instance" in missing.stderr


def test_up_without_files_resumes_and_replica_ids_never_repeat(kapell_up: StartFn) -> None:
    first = kapell_up(spec(1), 1)
    [before] = first.replicas()
    chat_once(first)
    stop(first)
    second = kapell_up(None, 1)  # no -f: the Model comes from the state directory
    chat_once(second)
    [after] = second.replicas()
    assert after["id"] != before["id"]
    assert after["id"].rsplit("-", 1)[0] == before["id"].rsplit("-", 1)[0]
    logs = second.state_dir / "logs" / "chat"
    first_log = (logs / f"{before['id']}.log").read_text()
    second_log = (logs / f"{after['id']}.log").read_text()
    assert first_log.count("kapell: starting") == 1 and second_log.count("kapell: starting") == 1
    described = second.kapell("describe", "model", "chat")
    assert described.returncode == 0, described.stderr
    assert before["id"] in described.stdout and after["id"] in described.stdout


def test_logs_follow_prints_new_lines_and_stops_cleanly(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    [replica] = instance.replicas()
    command = [sys.executable, "-m", "kapell.cli", "logs", "chat", "-f",
               "--state-dir", str(instance.state_dir)]  # fmt: skip
    follower = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines = Lines(follower.stdout)
    try:
        assert "kapell: starting" in lines.next(15)
        os.kill(replica["pid"], signal.SIGKILL)  # its restart appends to the same log
        restarted = lines.next(15)
        assert restarted.startswith(f"{replica['id']} | --- kapell: starting"), restarted
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 0
        assert "Traceback" not in follower.stderr.read()  # type: ignore[union-attr]
    finally:
        follower.kill()
    # A follower also ends when the instance stops.
    follower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert instance.kapell("down").returncode == 0
        assert follower.wait(timeout=15) == 0
        assert "instance stopped" in follower.stderr.read()  # type: ignore[union-attr]
    finally:
        follower.kill()


def test_access_log_has_one_line_per_request(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    [replica] = instance.replicas()
    chat_once(instance)
    chat_once(instance, stream=True)
    with pytest.raises(openai.NotFoundError):  # no model: in no model's access log
        client(instance).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )
    bad = httpx.post(
        instance.gateway_url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6},
    )  # fmt: skip
    assert bad.status_code == 400
    shown = instance.kapell("logs", "chat", "--access")
    assert shown.returncode == 0, shown.stderr
    lines = [parse_line(line) for line in shown.stdout.splitlines()]
    assert [(r["model"], r["status"], r["stream"]) for r in lines] == [
        ("chat", "200", "false"), ("chat", "200", "true"), ("chat", "400", "false"),
    ]  # fmt: skip
    for record in lines:
        assert record["replica"] == replica["id"] and float(record["latency_ms"]) > 0
    assert lines[0]["generated_tokens"] == "5" and int(lines[0]["prompt_tokens"]) > 0
    path = instance.state_dir / "logs" / "chat" / "access.log"
    assert path.read_text().splitlines() == shown.stdout.splitlines()
    assert instance.kapell("logs", "chat", "--access", "--tail", "1").stdout.count("\n") == 1


def test_describe_shows_conditions_replicas_and_events(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    [replica] = instance.replicas()
    shown = instance.kapell("describe", "model", "chat")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert re.search(r"^Name:\s+chat$", text, re.M)
    assert "uri: h100-llama3-8b" in text and "name: sim" in text
    assert re.search(r"^\s+Ready\s+True\s+ReplicasReady\s+\d+s\s+1/1 replicas ready", text, re.M)
    assert re.search(rf"^\s+{replica['id']}\s+Ready\s+{replica['url']}", text, re.M)
    assert re.search(rf"^\s+\d+s\s+{replica['id']}\s+Starting\s+pid \d+", text, re.M)
    assert re.search(rf"^\s+\d+s\s+{replica['id']}\s+Ready\s+", text, re.M)
    missing = instance.kapell("describe", "model", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: Model/default/nope not found"


def test_get_has_age_and_wide_columns_and_cuts_nothing_when_piped(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    [replica] = instance.replicas()
    table = instance.kapell("get")  # stdout is a pipe here
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "ENGINE", "READY", "DESIRED", "REASON", "AGE", "MESSAGE"]
    assert re.fullmatch(r"chat\s+sim\s+1/1\s+1\s+ReplicasReady\s+\d+s\s+1/1 replicas ready", row)
    wide = instance.kapell("get", "model", "chat", "-o", "wide")
    header, row = wide.stdout.splitlines()
    assert header.split()[6:] == ["SOURCE", "GPU", "REPLICAS", "ENDPOINTS", "MESSAGE"]
    assert len(row) > 80
    assert row.split()[6:10] == ["h100-llama3-8b", "-", replica["id"], replica["url"]]
    assert row.endswith("1/1 replicas ready")


def test_chat_keeps_the_conversation_and_ends_at_bye(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    chat = subprocess.run(
        [sys.executable, "-m", "kapell.cli", "chat", "chat", "--max-tokens", "6",
         "--state-dir", str(instance.state_dir)],
        input="hello there\nand what comes next\n/bye\nnever sent\n",
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    replies = chat.stdout.splitlines()
    assert len(replies) == 2 and all(len(r.split()) == 6 for r in replies), chat.stdout
    log = instance.kapell("logs", "chat", "--access").stdout.splitlines()
    first, second = (parse_line(line) for line in log)
    assert (first["stream"], first["generated_tokens"]) == ("true", "6")
    # The second request carries the first exchange: its prompt holds both earlier turns.
    history = int(first["prompt_tokens"]) + int(first["generated_tokens"])
    assert int(second["prompt_tokens"]) >= history + len(["and", "what", "comes", "next"])
    unknown = instance.kapell("chat", "nope")
    assert unknown.returncode == 1 and "model 'nope' is not served" in unknown.stderr
