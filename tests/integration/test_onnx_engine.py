"""The onnx engine as a real process on a loopback port, called with the official client.

The last tests (marked ``reference``) start the torch reference engine on the same model
directory and check that both engines write the same text: greedy completions and chats on a
few prompts, and the same embeddings.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")
pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
pytest.importorskip("jinja2", reason="the onnx engine needs the 'onnx' extra")
import openai

pytestmark = pytest.mark.slow

MODEL_DIR = Path(__file__).resolve().parents[2] / "examples/models/tiny-shakespeare"
SERVED = "tiny-shakespeare"
PROMPTS = ["ROMEO:\n", "First Citizen:\nBefore we proceed", "KING RICHARD III:\nNow is the", "O"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"engine exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("engine did not become ready")


def _serve(engine: str, *extra: str) -> Iterator[str]:
    """An engine process on a free port until the generator is closed; checks a clean exit."""
    port = _free_port()
    command = [sys.executable, "-m", f"kapell.engines.{engine}", "--model", str(MODEL_DIR),
               "--served-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
               "--threads", "1", "--max-num-seqs", "8", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "error::FutureWarning"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, timeout_s=120)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
    assert stderr == b"", stderr.decode()


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    yield from _serve("onnx")


@pytest.fixture
def client(engine_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{engine_url}/v1", api_key="unused", max_retries=0)


def _metric(engine_url: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{engine_url}/metrics", timeout=5).read().decode()
    wanted = {"model_name": SERVED, **labels}
    for line in text.splitlines():
        match = re.fullmatch(r"([^{\s]+)\{([^}]*)\} (\S+)", line)
        if match and match[1] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if found == wanted:
                return float(match[3])
    raise AssertionError(f"no sample {name}{wanted}")


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    [model] = client.models.list()
    assert model.id == SERVED


def test_chat_greedy_streamed_equals_plain(client: openai.OpenAI) -> None:
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
    assert plain.system_fingerprint and plain.system_fingerprint.startswith(
        "kapell-onnx-onnxruntime-"
    )
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


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
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


def test_unset_sampling_uses_the_models_generation_config(client: openai.OpenAI) -> None:
    config = json.loads((MODEL_DIR / "generation_config.json").read_text())

    def sample(**sampling: float) -> str:
        reply = client.completions.create(
            model=SERVED, prompt="HAMLET:\n", max_tokens=40, seed=11, **sampling
        )
        return reply.choices[0].text

    assert sample() == sample(temperature=config["temperature"], top_p=config["top_p"])
    assert sample() != sample(temperature=1.0, top_p=1.0)


def test_completion_stops_at_a_stop_string(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=SERVED, prompt="First Citizen:\n", max_tokens=200, stop=["\n"], temperature=0
    )
    choice = reply.choices[0]
    assert "\n" not in choice.text
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == len(choice.text) + 1


def test_embeddings_are_unit_vectors_of_the_hidden_size(client: openai.OpenAI) -> None:
    hidden = json.loads((MODEL_DIR / "config.json").read_text())["n_embd"]
    reply = client.embeddings.create(model=SERVED, input=["To be, or not to be", "ROMEO"])
    assert [len(d.embedding) for d in reply.data] == [hidden, hidden]
    for item in reply.data:
        assert math.isclose(math.hypot(*item.embedding), 1.0, rel_tol=1e-4)
    assert reply.data[0].embedding != reply.data[1].embedding
    assert reply.usage.prompt_tokens == len("To be, or not to be") + len("ROMEO")
    alone = client.embeddings.create(model=SERVED, input="ROMEO").data[0].embedding
    assert max(abs(a - b) for a, b in zip(alone, reply.data[1].embedding, strict=True)) < 1e-5


def test_errors_reach_the_client_in_openai_form(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=SERVED, prompt="x", max_tokens=100_000)
    assert raised.value.code == "context_length_exceeded"


def test_concurrent_requests_share_forward_passes(engine_url: str) -> None:
    steps_before = _metric(engine_url, "kapell_engine_batch_size_count")
    alone_before = _metric(engine_url, "kapell_engine_batch_size_bucket", le="1.0")
    tokens_before = _metric(engine_url, "vllm:generation_tokens_total")

    async def fire() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=f"{engine_url}/v1", api_key="unused", max_retries=0
        ) as client:
            replies = await asyncio.gather(
                *(
                    client.completions.create(
                        model=SERVED, prompt=prompt, max_tokens=64, temperature=0.8, seed=i
                    )
                    for i, prompt in enumerate(["ROMEO:\n", "JULIET:\n", "HAMLET:\n", "KING:\n"])
                )
            )
        return [r.choices[0].text for r in replies]

    texts = asyncio.run(fire())
    assert all(len(t) == 64 for t in texts)
    steps = _metric(engine_url, "kapell_engine_batch_size_count") - steps_before
    alone = _metric(engine_url, "kapell_engine_batch_size_bucket", le="1.0") - alone_before
    generated = _metric(engine_url, "vllm:generation_tokens_total") - tokens_before
    assert generated == 4 * 64
    assert steps < generated - 4
    assert alone < steps


def test_a_client_that_goes_away_frees_its_sequence(engine_url: str) -> None:
    tokens_before = _metric(engine_url, "vllm:generation_tokens_total")
    client = openai.OpenAI(base_url=f"{engine_url}/v1", api_key="unused", max_retries=0)
    stream = client.completions.create(model=SERVED, prompt="ROMEO:\n", max_tokens=240, stream=True)
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    client.close()
    deadline = time.monotonic() + 30
    while _metric(engine_url, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "the abandoned sequence is still running"
        time.sleep(0.1)
    assert _metric(engine_url, "vllm:generation_tokens_total") - tokens_before < 240
    assert _metric(engine_url, "vllm:gpu_cache_usage_perc") == 0.0


def test_a_missing_model_exits_1_with_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kapell.engines.onnx", "--model", str(tmp_path),
               "--port", str(_free_port())]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "no model.onnx" in result.stderr


# ---- the same model's text as the torch reference engine ------------------------------------


@pytest.fixture(scope="module")
def reference_url() -> Iterator[str]:
    pytest.importorskip("torch", reason="the reference engine needs the 'reference' extra")
    pytest.importorskip("transformers", reason="the reference engine needs transformers")
    yield from _serve("reference", "--device", "cpu")


@pytest.mark.reference
def test_greedy_text_equals_the_reference_engines(engine_url: str, reference_url: str) -> None:
    def texts(url: str) -> list[str]:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        completions = [
            client.completions.create(model=SERVED, prompt=p, max_tokens=120, temperature=0)
            .choices[0]
            .text
            for p in PROMPTS
        ]
        chat = client.chat.completions.create(
            model=SERVED,
            messages=[
                {"role": "user", "content": "ROMEO:\nWhat light through yonder window breaks?"},
                {"role": "assistant", "content": "JULIET:\nIt is my lady."},
            ],
            max_tokens=120,
            temperature=0,
        )
        return [*completions, chat.choices[0].message.content or ""]

    onnx_texts, reference_texts = texts(engine_url), texts(reference_url)
    assert all(len(t) == 120 for t in onnx_texts)
    assert onnx_texts == reference_texts


@pytest.mark.reference
def test_embeddings_equal_the_reference_engines(engine_url: str, reference_url: str) -> None:
    def vectors(url: str) -> list[list[float]]:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.embeddings.create(model=SERVED, input=PROMPTS)
        return [d.embedding for d in reply.data]

    for ours, theirs in zip(vectors(engine_url), vectors(reference_url), strict=True):
        assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-4
