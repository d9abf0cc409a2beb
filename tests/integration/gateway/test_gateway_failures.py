"""A replica killed mid-request: retried elsewhere, or the stream ends with an error event."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Stack
from kapell.api import Model
from kapell.api.metrics import GATEWAY_UPSTREAM_RETRIES

STUB = Path(__file__).resolve().parent / "stub_engine.py"


def round_robin_model(name: str) -> Model:
    return Model.model_validate({
        "metadata": {"name": name},
        "spec": {"source": {"url": "http://unused"}, "engine": {"name": "external"},
                 "routing": {"strategy": "round-robin"}},
    })  # fmt: skip


@pytest.fixture
def doomed_replica() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A stub engine in its own process, slow enough to be killed mid-request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            str(STUB),
            "--port",
            str(port),
            "--name",
            "doomed",
            "--token-delay-s",
            "0.05",
            "--tokens",
            "60",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(url + "/v1/embeddings", json={"model": "x", "input": "x"})
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield process, url
    process.kill()
    process.wait()


def setup(stack: Stack, doomed_url: str) -> openai.OpenAI:
    healthy = stack.add_engine("healthy")
    stack.loop_thread.call(lambda: stack.source.add_model(round_robin_model("tiny")))
    stack.set_endpoints("tiny", [doomed_url, healthy])
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="none", max_retries=0)


def test_non_streamed_request_is_retried_on_another_replica(
    make_stack: Callable[..., Stack], doomed_replica: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, url = doomed_replica
    stack = make_stack()
    api = setup(stack, url)
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os,time; time.sleep(0.5); os.kill({process.pid}, 9)"]
    )
    reply = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=40
    )
    killer.wait()
    assert process.wait(5) != 0
    assert reply.system_fingerprint == "healthy"
    exposition = httpx.get(stack.url + "/metrics").text
    retries = [
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == GATEWAY_UPSTREAM_RETRIES
    ]
    assert retries == [1.0]


def test_stream_ends_with_an_error_event_when_its_replica_dies(
    make_stack: Callable[..., Stack], doomed_replica: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, url = doomed_replica
    api = setup(make_stack(), url)
    stream = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=60, stream=True
    )
    received = 0
    with pytest.raises(openai.APIError) as failed:
        for chunk in stream:
            assert chunk.system_fingerprint == "doomed"
            received += 1
            if received == 3:
                process.kill()
    assert 3 <= received < 60
    assert "failed mid-stream" in str(failed.value)
