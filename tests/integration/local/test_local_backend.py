"""The local backend end to end: real `kapell up`, real sim-engine processes, the openai client.

Each test drives the platform the way a user does (CLI and HTTP) and checks what a user would
notice: answers, restarts after a crash, rollouts without failed requests, nothing left behind.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable

import httpx
import openai
import psutil

from tests.integration.local.conftest import Instance, descendants

SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: chat}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.3", "--speedup", "SPEEDUP"]}
  scaling: {minReplicas: REPLICAS, maxReplicas: 4}
"""

StartFn = Callable[..., Instance]


def spec(replicas: int, speedup: str = "20") -> str:
    return SPEC.replace("REPLICAS", str(replicas)).replace("SPEEDUP", speedup)


def client(instance: Instance) -> openai.OpenAI:
    return openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="unused", max_retries=0)


class Load:
    """Sends chat requests back to back from a thread until stopped; counts failures."""

    def __init__(self, instance: Instance) -> None:
        self._client = client(instance)
        self._stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self._client.chat.completions.create(
                    model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
                assert reply.choices[0].message.content is not None
                self.ok += 1
            except Exception as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_openai_client_gets_plain_and_streamed_chat(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    c = client(instance)
    assert [m.id for m in c.models.list().data] == ["chat"]
    reply = c.chat.completions.create(
        model="chat", max_tokens=12, messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert "sim" in (reply.system_fingerprint or "")
    chunks = list(
        c.chat.completions.create(
            model="chat", max_tokens=12, stream=True,
            messages=[{"role": "user", "content": "hello"}],
        )
    )  # fmt: skip
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(chunks) > 2 and text

    report = instance.kapell("energy", "report", "--json")
    assert report.returncode == 0, report.stderr
    [row] = json.loads(report.stdout)["models"]
    assert (row["model"], row["source"], row["requests"]) == ("chat", "modelled", 2)
    assert row["tokens"] > 24 and row["joules_per_1k_tokens"] > 0

    scrape = httpx.get(instance.gateway_url + "/metrics", timeout=10).text
    assert 'kapell_model_replicas_desired{model="chat"} 1.0' in scrape
    assert 'kapell_model_replicas_ready{model="chat"} 1.0' in scrape
    assert 'kapell_model_joules_per_1k_tokens{model="chat",source="modelled"}' in scrape
    charged = [
        line for line in scrape.splitlines()
        if line.startswith("kapell_gateway_request_energy_joules_count{") and 'model="chat"' in line
    ]  # fmt: skip
    assert len(charged) == 1 and 'source="modelled"' in charged[0]
    assert charged[0].endswith(" 2.0")  # both requests were charged


def test_sigkilled_replica_restarts_within_10s_and_no_request_fails(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(2), 2)
    with Load(instance) as load:
        time.sleep(1.0)
        victim = instance.replicas()[0]
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        instance.wait_for(
            lambda: any(
                r["id"] == victim["id"] and r["phase"] == "Ready" and r["pid"] != victim["pid"]
                for r in instance.replicas()
            ),
            10, "the killed replica to be restarted and ready",
        )  # fmt: skip
        restarted_s = time.monotonic() - killed_at
        time.sleep(0.5)
    assert restarted_s < 10
    assert load.ok > 20
    assert load.failures == []
    restarted = next(r for r in instance.replicas() if r["id"] == victim["id"])
    assert restarted["restarts"] == 1


def test_reapplying_a_changed_model_replaces_replicas_without_failed_requests(
    kapell_up: StartFn,
) -> None:
    instance = kapell_up(spec(2), 2)
    before = {r["id"] for r in instance.replicas()}
    changed = instance.state_dir.parent / "changed.yaml"
    changed.write_text(spec(2, speedup="25"))
    with Load(instance) as load:
        time.sleep(0.5)
        result = instance.kapell("apply", "-f", str(changed))
        assert result.returncode == 0, result.stderr
        assert "model/chat configured" in result.stdout

        def rolled() -> bool:
            ready = instance.replicas()
            return (
                len(ready) == 2
                and not ({r["id"] for r in ready} & before)
                and (len(instance.replicas(ready_only=False)) == 2)
            )

        instance.wait_for(rolled, 60, "both replicas replaced")
        time.sleep(0.5)
    assert load.ok > 20
    assert load.failures == []


def test_cli_get_logs_delete_and_down_leave_no_process(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(1), 1)
    got = instance.kapell("get")
    assert got.returncode == 0 and "chat" in got.stdout and "1/1" in got.stdout
    logs = instance.kapell("logs", "chat")
    assert logs.returncode == 0 and "kapell: starting" in logs.stdout
    children = descendants(instance.process.pid)
    assert children, "the replica should be a child of kapell up"
    deleted = instance.kapell("delete", "model", "chat")
    assert deleted.returncode == 0 and "model/chat deleted" in deleted.stdout
    instance.wait_for(lambda: not instance.replicas(ready_only=False), 20, "replicas to stop")
    down = instance.kapell("down")
    assert down.returncode == 0, down.stderr
    instance.process.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_sigint_stops_every_replica(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(2), 2)
    children = descendants(instance.process.pid)
    assert len(children) >= 2
    instance.process.send_signal(signal.SIGINT)
    assert instance.process.wait(timeout=30) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_scale_from_zero_holds_the_request_until_a_replica_is_ready(kapell_up: StartFn) -> None:
    instance = kapell_up(spec(0), 0)
    assert instance.replicas(ready_only=False) == []
    reply = client(instance).chat.completions.create(
        model="chat", max_tokens=4, messages=[{"role": "user", "content": "wake up"}], timeout=60
    )
    assert reply.choices[0].message.content
    assert len(instance.replicas()) == 1


def test_external_engine_routes_to_a_server_kapell_does_not_run(kapell_up: StartFn) -> None:
    from tests.integration.sim_procs import free_port, processes, sim_engine_args, wait_healthy

    port = free_port()
    args = sim_engine_args(
        "h100-llama3-8b", "remote", port, "--cold-start-s", "0", "--speedup", "20"
    )
    with processes([args]):
        wait_healthy(f"http://127.0.0.1:{port}")
        external = (
            "apiVersion: kapell.dev/v1alpha1\nkind: Model\nmetadata: {name: remote}\n"
            f"spec:\n  source: {{url: 'http://127.0.0.1:{port}/v1'}}\n  engine: {{name: external}}\n"
        )
        instance = kapell_up(external, 1)
        assert descendants(instance.process.pid) == []  # nothing started for it
        reply = client(instance).chat.completions.create(
            model="remote", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content and "sim" in (reply.system_fingerprint or "")
