"""A Model whose replicas cannot start: a request is answered at once with the reason.

Real `kapell up`, the official openai client with its default retries. Before, such a request
waited the activator's 300 s and then got a 503 saying the model "may still be starting".
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

from kapell.api.loader import load_text
from tests.integration.local.conftest import Instance
from tests.integration.local.test_local_backend import StartFn, spec

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
VLLM_MODEL = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: big}
spec:
  source: {uri: hf://meta-llama/Llama-3.1-8B}
  engine: {name: vllm}
  scaling: {minReplicas: MIN, maxReplicas: 1}
"""


def _ask(instance: Instance) -> tuple[openai.APIStatusError, float]:
    """Send one chat request for `big` (default retries); the error and how long it took."""
    api = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="unused", timeout=60)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        api.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    return caught.value, time.monotonic() - started


def _message(error: openai.APIStatusError) -> str:
    assert isinstance(error.body, dict)
    return str(error.body["message"])


def test_a_model_whose_engine_is_not_installed_fails_fast(
    kapell_up: StartFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("vllm", path=SYSTEM_PATH) is not None:
        pytest.skip("vllm is installed here")
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    instance = kapell_up(spec(0), 0)
    # `kapell apply` refuses it (vllm is not on PATH); a stored Model can still get there,
    # e.g. applied before vllm was uninstalled. Apply it the way the CLI would, unchecked.
    [model] = load_text(VLLM_MODEL.replace("MIN", "0"))
    body = {"resources": [model.model_dump(mode="json", by_alias=True, exclude={"status"})]}
    httpx.post(instance.admin_url + "/admin/v1/apply", json=body, timeout=10).raise_for_status()

    # Scaled to zero: the request is held, the controller fails to start a replica, the
    # gateway releases the request with the reason.
    error, elapsed = _ask(instance)
    assert error.status_code == 503 and error.code == "model_cannot_start"
    assert _message(error).startswith("model 'big' cannot start: engine 'vllm' needs 'vllm'")
    assert elapsed < 5, f"held {elapsed:.1f}s"
    # Now the model is known not to start: the next request is refused at once.
    error, elapsed = _ask(instance)
    assert error.status_code == 503 and "needs 'vllm' on PATH" in _message(error)
    assert elapsed < 1, f"answered after {elapsed:.1f}s"
    metrics = httpx.get(instance.gateway_url + "/metrics").text
    assert 'kapell_gateway_requests_total{code="503",model="big",tenant="anonymous"} 2.0' in (
        metrics
    ), "the openai client did not retry"


def test_a_model_whose_replicas_crash_before_ready_fails_fast(
    kapell_up: StartFn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'vllm: no CUDA device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{SYSTEM_PATH}")
    instance = kapell_up(VLLM_MODEL.replace("MIN", "1"), 0)
    error, elapsed = _ask(instance)
    assert error.status_code == 503 and error.code == "model_cannot_start"
    message = _message(error)
    assert message.startswith("model 'big' cannot start: every replica exits before it is ready")
    assert "exited with code 1" in message
    assert elapsed < 10, f"held {elapsed:.1f}s"
