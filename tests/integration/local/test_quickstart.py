"""The quickstart as a user runs it: `kapell up -f examples/quickstart.yaml`, then the openai client.

The model is the project's own tiny character-level GPT-2 trained on Shakespeare, exported to ONNX
and served by the onnx engine (ONNX Runtime on the CPU), so this needs the 'onnx' extra, no torch
and no network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.integration.local.conftest import Instance

pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart.yaml"


def test_quickstart_serves_shakespeare_to_the_openai_client(
    kapell_up: Callable[[str, int], Instance],
) -> None:
    spec = QUICKSTART.read_text().replace(
        "uri: models/tiny-shakespeare", f"uri: {QUICKSTART.parent / 'models' / 'tiny-shakespeare'}"
    )
    instance = kapell_up(spec, 1)
    client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "ROMEO:"}]
    reply = client.chat.completions.create(
        model="tiny-shakespeare", messages=messages, max_tokens=80, temperature=0.8, seed=1
    )  # type: ignore[arg-type]
    text = reply.choices[0].message.content or ""
    assert len(text) > 40
    # Recognisably Shakespeare-like: mostly English letters and the play's punctuation.
    letters = sum(ch.isalpha() or ch in " \n,.;:'!?-" for ch in text)
    assert letters / len(text) > 0.9, text
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="tiny-shakespeare", messages=messages, max_tokens=40, stream=True
    )  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 5 and "".join(pieces).strip()

    report = instance.kapell("energy", "report", "--json")
    assert report.returncode == 0, report.stderr
    [row] = json.loads(report.stdout)["models"]
    assert row["model"] == "tiny-shakespeare" and row["source"] == "modelled"
    assert row["joules_per_1k_tokens"] > 0 and row["tokens"] > 0
