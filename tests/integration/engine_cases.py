"""What every engine server kapell ships must do, as a real process behind the official client.

An engine's test module starts its server with :func:`serve_engine` in a module-scoped
``engine_url`` fixture and subclasses :class:`EngineServerCases`, so the ``reference`` and
``onnx`` engines answer the same cases; each module adds what only its engine does.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import openai
import pytest

from kapell.net import free_port, wait_http

MODEL_DIR = Path(__file__).resolve().parents[2] / "examples/models/tiny-shakespeare"
SERVED = "tiny-shakespeare"


def serve_engine(engine: str, *extra: str) -> Iterator[str]:
    """``kapell.engines.<engine>`` on the tiny model and a free port, until the generator is
    closed; then checks that it exited with status 0 and printed nothing."""
    port = free_port()
    command = [sys.executable, "-m", f"kapell.engines.{engine}", "--model", str(MODEL_DIR),
               "--served-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
               "--threads", "1", "--max-num-seqs", "8", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "error::FutureWarning"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", 120, process=process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
    assert stderr == b"", stderr.decode()


def metric(engine_url: str, name: str, **labels: str) -> float:
    """One sample of ``/metrics``, for the served model and ``labels``."""
    text = urllib.request.urlopen(f"{engine_url}/metrics", timeout=5).read().decode()
    wanted = {"model_name": SERVED, **labels}
    for line in text.splitlines():
        match = re.fullmatch(r"([^{\s]+)\{([^}]*)\} (\S+)", line)
        if match and match[1] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if found == wanted:
                return float(match[3])
    raise AssertionError(f"no sample {name}{wanted}")


def run_engine_command(engine: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", f"kapell.engines.{engine}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


class EngineServerCases:
    """The cases every engine answers alike; needs an ``engine_url`` fixture."""

    engine: ClassVar[str]
    """The module under ``kapell.engines``."""
    fingerprint_prefix: ClassVar[str]

    @pytest.fixture
    def client(self, engine_url: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{engine_url}/v1", api_key="unused", max_retries=0)

    def test_models_lists_the_served_name(self, client: openai.OpenAI) -> None:
        assert [m.id for m in client.models.list()] == [SERVED]

    def test_chat_greedy_streamed_equals_plain(self, client: openai.OpenAI) -> None:
        messages = [{"role": "user", "content": "ROMEO:\nWhat light through yonder window breaks?"}]
        plain = client.chat.completions.create(
            model=SERVED,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=40,
            temperature=0,
        )
        text = plain.choices[0].message.content
        assert text and len(text) == 40  # one token per character, and no end-of-text
        assert plain.choices[0].finish_reason == "length"
        assert plain.usage is not None and plain.usage.completion_tokens == 40
        assert plain.system_fingerprint
        assert plain.system_fingerprint.startswith(self.fingerprint_prefix)
        stream = client.chat.completions.create(
            model=SERVED,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == plain.usage.total_tokens

    def test_seeded_sampling_repeats(self, client: openai.OpenAI) -> None:
        def sample(seed: int) -> str:
            reply = client.completions.create(
                model=SERVED,
                prompt="KING RICHARD",
                max_tokens=30,
                seed=seed,
                temperature=0.9,
                top_p=0.9,
            )
            return reply.choices[0].text

        assert sample(7) == sample(7)
        assert len({sample(7), sample(8), sample(9)}) > 1

    def test_unset_sampling_uses_the_models_generation_config(self, client: openai.OpenAI) -> None:
        config = json.loads((MODEL_DIR / "generation_config.json").read_text())

        def sample(**sampling: float) -> str:
            reply = client.completions.create(
                model=SERVED, prompt="HAMLET:\n", max_tokens=40, seed=11, **sampling
            )
            return reply.choices[0].text

        assert sample() == sample(temperature=config["temperature"], top_p=config["top_p"])
        assert sample() != sample(temperature=1.0, top_p=1.0)

    def test_completion_stops_at_a_stop_string(self, client: openai.OpenAI) -> None:
        reply = client.completions.create(
            model=SERVED, prompt="First Citizen:\n", max_tokens=200, stop=["\n"], temperature=0
        )
        choice = reply.choices[0]
        assert "\n" not in choice.text
        assert choice.finish_reason == "stop"
        assert reply.usage is not None and reply.usage.completion_tokens == len(choice.text) + 1

    def test_embeddings_are_unit_vectors_of_the_hidden_size(self, client: openai.OpenAI) -> None:
        hidden = json.loads((MODEL_DIR / "config.json").read_text())["n_embd"]
        reply = client.embeddings.create(model=SERVED, input=["To be, or not to be", "ROMEO"])
        assert [len(d.embedding) for d in reply.data] == [hidden, hidden]
        for item in reply.data:
            assert math.isclose(math.hypot(*item.embedding), 1.0, rel_tol=1e-4)
        assert reply.data[0].embedding != reply.data[1].embedding
        assert reply.usage.prompt_tokens == len("To be, or not to be") + len("ROMEO")
        alone = client.embeddings.create(model=SERVED, input="ROMEO").data[0].embedding
        assert max(abs(a - b) for a, b in zip(alone, reply.data[1].embedding, strict=True)) < 1e-5

    def test_errors_reach_the_client_in_openai_form(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model=SERVED, prompt="x", max_tokens=100_000)
        assert raised.value.code == "context_length_exceeded"

    def test_concurrent_requests_share_forward_passes(self, engine_url: str) -> None:
        steps_before = metric(engine_url, "kapell_engine_batch_size_count")
        alone_before = metric(engine_url, "kapell_engine_batch_size_bucket", le="1.0")
        tokens_before = metric(engine_url, "vllm:generation_tokens_total")

        async def fire() -> list[str]:
            async with openai.AsyncOpenAI(
                base_url=f"{engine_url}/v1", api_key="unused", max_retries=0
            ) as client:
                replies = await asyncio.gather(
                    *(
                        client.completions.create(
                            model=SERVED, prompt=prompt, max_tokens=64, temperature=0.8, seed=i
                        )
                        for i, prompt in enumerate(
                            ["ROMEO:\n", "JULIET:\n", "HAMLET:\n", "KING:\n"]
                        )
                    )
                )
            return [r.choices[0].text for r in replies]

        texts = asyncio.run(fire())
        assert all(len(t) == 64 for t in texts)
        steps = metric(engine_url, "kapell_engine_batch_size_count") - steps_before
        alone = metric(engine_url, "kapell_engine_batch_size_bucket", le="1.0") - alone_before
        generated = metric(engine_url, "vllm:generation_tokens_total") - tokens_before
        assert generated == 4 * 64
        # Sequential serving would need about one decode step per token; batching needs fewer,
        # and some steps must have carried more than one sequence.
        assert steps < generated - 4
        assert alone < steps

    def test_a_client_that_goes_away_frees_its_sequence(self, engine_url: str) -> None:
        tokens_before = metric(engine_url, "vllm:generation_tokens_total")
        client = openai.OpenAI(base_url=f"{engine_url}/v1", api_key="unused", max_retries=0)
        stream = client.completions.create(
            model=SERVED, prompt="ROMEO:\n", max_tokens=240, stream=True
        )
        for _, _chunk in zip(range(3), stream, strict=False):
            pass
        stream.close()
        client.close()
        deadline = time.monotonic() + 30
        while metric(engine_url, "vllm:num_requests_running") > 0:
            assert time.monotonic() < deadline, "the abandoned sequence is still running"
            time.sleep(0.1)
        assert metric(engine_url, "vllm:generation_tokens_total") - tokens_before < 240
        assert metric(engine_url, "vllm:gpu_cache_usage_perc") == 0.0

    def test_a_missing_model_exits_1_with_one_line(self, tmp_path: Path) -> None:
        result = run_engine_command(
            self.engine, "--model", str(tmp_path / "none"), "--port", str(free_port())
        )
        assert result.returncode == 1
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1
        assert "no such directory" in result.stderr
