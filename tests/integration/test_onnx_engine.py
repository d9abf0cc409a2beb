"""The onnx engine as a real process on a loopback port, called with the official client.

The last tests (marked ``reference``) start the torch reference engine on the same model
directory and check that both engines write the same text: greedy completions and chats on a
few prompts, and the same embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")
pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
pytest.importorskip("jinja2", reason="the onnx engine needs the 'onnx' extra")
import openai

from kapell.net import free_port
from tests.integration.engine_cases import (
    SERVED,
    EngineServerCases,
    run_engine_command,
    serve_engine,
)

pytestmark = pytest.mark.slow

PROMPTS = ["ROMEO:\n", "First Citizen:\nBefore we proceed", "KING RICHARD III:\nNow is the", "O"]


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    yield from serve_engine("onnx")


class TestOnnxEngine(EngineServerCases):
    engine = "onnx"
    fingerprint_prefix = "kapell-onnx-onnxruntime-"


def test_a_directory_without_model_onnx_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run_engine_command("onnx", "--model", str(tmp_path), "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "no model.onnx" in result.stderr


# ---- the same model's text as the torch reference engine ------------------------------------


@pytest.fixture(scope="module")
def reference_url() -> Iterator[str]:
    pytest.importorskip("torch", reason="the reference engine needs the 'reference' extra")
    pytest.importorskip("transformers", reason="the reference engine needs transformers")
    yield from serve_engine("reference", "--device", "cpu")


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
