"""The ``sim`` engine server, called with the official openai client over real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from kapell.engines.sim.fit import fit
from kapell.net import free_port, wait_http

from .sim_procs import processes, sim_engine_args

PERF_DIR = Path(__file__).resolve().parents[2] / "../shared/data/llm-perf"
PROFILES_JSON = Path(__file__).resolve().parents[2] / "src/kapell/engines/sim/profiles.json"


@pytest.fixture(scope="module")
def engine_url() -> object:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with processes([sim_engine_args("h100-llama3-8b", "llama", port, "--cold-start-s", "0.5")]):
        wait_http(url + "/health")
        yield url


def test_completion_reports_usage_and_says_it_is_simulated(engine_url: str) -> None:
    client = OpenAI(base_url=engine_url + "/v1", api_key="unused")
    reply = client.completions.create(model="llama", prompt=list(range(300)), max_tokens=17)
    assert reply.system_fingerprint is not None and "simulated" in reply.system_fingerprint
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (300, 17)
    assert reply.choices[0].finish_reason == "length"


def test_streamed_chat_yields_max_tokens_chunks(engine_url: str) -> None:
    client = OpenAI(base_url=engine_url + "/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "hello " * 50}],
        max_tokens=12,
        stream=True,
    )
    chunks = [c for c in stream if c.choices and c.choices[0].delta.content]
    assert len(chunks) == 12
    assert all("simulated" in (c.system_fingerprint or "") for c in chunks)


def test_metrics_use_vllm_names(engine_url: str) -> None:
    client = OpenAI(base_url=engine_url + "/v1", api_key="unused")
    client.completions.create(model="llama", prompt="a b c", max_tokens=3)
    text = httpx.get(engine_url + "/metrics").text
    for name in (
        "vllm:num_requests_running",
        "vllm:prompt_tokens_total",
        "vllm:time_to_first_token_seconds",
    ):
        assert name in text


def test_cold_start_delays_readiness() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with processes([sim_engine_args("a100-llama2-7b", "m", port, "--cold-start-s", "3")]):
        wait_http(url + "/v1/models")
        assert httpx.get(url + "/health").status_code == 503
        wait_http(url + "/health")


def test_unknown_profile_exits_with_one_line() -> None:
    result = subprocess.run(
        sim_engine_args("tpu-llama", "m", free_port()), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "h100-llama3-8b" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not PERF_DIR.exists(), reason="needs ../shared/data/llm-perf")
def test_committed_profiles_are_what_the_fit_produces() -> None:
    assert json.loads(json.dumps(fit(PERF_DIR))) == json.loads(PROFILES_JSON.read_text())


def test_module_entry_point_has_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kapell.engines.sim", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        result.returncode == 0
        and "--speedup" in result.stdout
        and "--cold-start-s" in result.stdout
    )
