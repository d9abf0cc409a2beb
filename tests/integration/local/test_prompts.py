"""Prompts end to end: a real `kapell up` with a sim engine, the openai client as the caller.

A prompt is served by version through the Responses API and as the ``prompt`` extension of
chat completions; a version is immutable; a canary of a good version is promoted step by step
and one of a bad version (a template longer than the model's context, so the engine refuses
every request it renders) is rolled back on its own, with the evidence in the status.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.local.conftest import Instance

MODEL = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: chat}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.3", "--speedup", "20"]}
  scaling: {minReplicas: 1, maxReplicas: 1}
"""
PROMPT = """\
---
apiVersion: kapell.dev/v1alpha1
kind: Prompt
metadata: {name: greet}
spec:
  model: chat
  version: VERSION
  template: "TEMPLATE"
  rollout: ROLLOUT
"""
ROLLOUT = {"steps": [20, 50, 100], "stepInterval": "1s", "minRequests": 10}
StartFn = Callable[..., Instance]


def prompt_spec(version: int, template: str) -> str:
    prompt = PROMPT.replace("VERSION", str(version)).replace("TEMPLATE", template)
    return MODEL + prompt.replace("ROLLOUT", json.dumps(ROLLOUT))


def apply(instance: Instance, tmp_path: Path, spec: str) -> subprocess.CompletedProcess[str]:
    """`kapell apply -f` the spec, as a user would."""
    path = tmp_path / f"apply-{uuid.uuid4().hex}.yaml"
    path.write_text(spec)
    return instance.kapell("apply", "-f", str(path))


def post_version(instance: Instance, version: int, template: str) -> None:
    """Apply a version through the admin API (what `kapell apply` posts, without starting a
    CLI process)."""
    prompt = {
        "kind": "Prompt",
        "metadata": {"name": "greet"},
        "spec": {"model": "chat", "version": version, "template": template, "rollout": ROLLOUT},
    }
    answer = httpx.post(f"{instance.admin_url}/admin/v1/apply", json={"resources": [prompt]})
    assert answer.status_code == 200, answer.text


def status(instance: Instance) -> dict[str, Any]:
    """The Prompt's status, from the admin API (the CLI's `get -o json` says the same)."""
    url = f"{instance.admin_url}/admin/v1/resources/Prompt/default/greet"
    return dict(httpx.get(url).json()["status"])


def client(instance: Instance) -> openai.OpenAI:
    return openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0)


def ask(chat: openai.OpenAI, version: int | None = None) -> str:
    """One chat completion through the prompt, as a new user; the version that answered
    (a request the engine refused answers ``error``)."""
    ref: dict[str, Any] = {"id": "greet", "variables": {"name": "Ann"}}
    if version is not None:
        ref["version"] = version
    try:
        raw = chat.chat.completions.with_raw_response.create(
            model="chat", messages=[], max_tokens=2, user=uuid.uuid4().hex,
            extra_body={"prompt": ref},
        )  # fmt: skip
    except openai.BadRequestError:
        return "error"
    return str(raw.headers["x-kapell-prompt-version"])


def test_a_prompt_is_served_by_version(kapell_up: StartFn, tmp_path: Path) -> None:
    instance = kapell_up(prompt_spec(1, "Greet {{name}} politely."))
    chat = client(instance)
    instance.wait_for(lambda: status(instance).get("stableVersion") == 1, 10, "version 1")

    response = chat.responses.create(
        model="chat",
        prompt={"id": "greet", "version": "1", "variables": {"name": "Ann"}},
        input="Hello",
        max_output_tokens=4,
    )
    assert response.object == "response" and response.output_text
    assert response.usage is not None and response.usage.output_tokens == 4
    # The rendered template went to the model: more input tokens than "Hello" alone.
    assert response.usage.input_tokens > 4

    post_version(instance, 2, "Greet {{name}} warmly.")
    assert ask(chat, version=1) == "1", "an older version is no longer servable"
    assert ask(chat, version=2) == "2"

    refused = apply(instance, tmp_path, prompt_spec(1, "Greet {{name}} rudely."))
    assert refused.returncode != 0
    assert "version 1 is already applied with another template" in refused.stderr
    assert ask(chat, version=1) == "1"

    with pytest.raises(openai.BadRequestError, match=r"missing: name"):
        chat.responses.create(model="chat", prompt={"id": "greet", "variables": {}})
    with pytest.raises(openai.BadRequestError, match=r"unknown: city"):
        chat.responses.create(
            model="chat", prompt={"id": "greet", "variables": {"name": "A", "city": "B"}}
        )
    with pytest.raises(openai.NotFoundError, match=r"prompt 'nope' does not exist"):
        chat.responses.create(model="chat", prompt={"id": "nope"})
    with pytest.raises(openai.NotFoundError, match=r"has no version 9 \(versions: 1, 2\)"):
        chat.responses.create(model="chat", prompt={"id": "greet", "version": "9"})

    feedback = httpx.post(
        instance.gateway_url + "/v1/prompts/greet/feedback",
        json={"response_id": response.id, "score": 1},
    )
    assert feedback.status_code == 200 and feedback.json()["version"] == 1
    unknown = httpx.post(
        instance.gateway_url + "/v1/prompts/greet/feedback",
        json={"response_id": "resp_nope", "score": 0},
    )
    assert unknown.status_code == 404 and "resp_nope" in unknown.text
    metrics = httpx.get(instance.gateway_url + "/metrics").text
    assert 'kapell_prompt_feedback_total{prompt="greet",sentiment="positive",version="1"} 1.0' in (
        metrics
    )
    assert 'kapell_prompt_requests_total{code="200",prompt="greet",version="2"}' in metrics


def drive(instance: Instance, chat: openai.OpenAI, until: Callable[[dict[str, Any]], bool],
          limit: int = 600) -> tuple[dict[str, Any], dict[str, int]]:  # fmt: skip
    """Send requests as new users until the prompt's status satisfies ``until``; the status
    then, and how many answers each version (or ``error``) gave."""
    answers: dict[str, int] = {}
    for sent in range(limit):
        answer = ask(chat)
        answers[answer] = answers.get(answer, 0) + 1
        if sent % 10 == 9 and until(found := status(instance)):
            return found, answers
    raise AssertionError(f"{limit} requests and the rollout did not end: {status(instance)}")


def test_a_canary_promotes_a_good_version_and_rolls_back_a_bad_one(kapell_up: StartFn) -> None:
    instance = kapell_up(prompt_spec(1, "Greet {{name}} politely."))
    chat = client(instance)
    instance.wait_for(lambda: status(instance).get("stableVersion") == 1, 10, "version 1")

    post_version(instance, 2, "Greet {{name}} warmly.")
    instance.wait_for(lambda: status(instance).get("canaryVersion") == 2, 10, "the canary")
    table = instance.kapell("get", "prompts").stdout
    assert "v1=80% v2=20%(Canary)" in table and "Progressing" in table
    promoted, answers = drive(instance, chat, lambda s: s["phase"] != "Progressing")
    assert promoted["phase"] == "Stable" and promoted["stableVersion"] == 2, promoted["message"]
    assert "canary 2 promoted" in promoted["message"]
    assert answers.get("1", 0) > 0 and answers.get("2", 0) > 0 and "error" not in answers

    too_long = " ".join(["filler"] * 9000) + " {{name}}"  # past the model's 8192 tokens
    post_version(instance, 3, too_long)
    instance.wait_for(lambda: status(instance).get("canaryVersion") == 3, 10, "the canary")
    rolled_back, answers = drive(instance, chat, lambda s: s["phase"] != "Progressing")
    assert rolled_back["phase"] == "RolledBack", rolled_back["message"]
    assert rolled_back["stableVersion"] == 2 and rolled_back["rolledBack"] == [3]
    evidence = rolled_back["evidence"]
    assert evidence["llr"]["errors"] >= evidence["upper"]
    assert evidence["canary"]["errors"] == evidence["canary"]["requests"] > 0
    assert "canary 3 rolled back: errors: log-likelihood ratio" in rolled_back["message"]
    assert answers["error"] > 0
    weights = {v["version"]: (v["weight"], v["state"]) for v in rolled_back["versions"]}
    assert weights[2] == (100, "Stable") and weights[3] == (0, "RolledBack")
    assert {ask(chat) for _ in range(20)} == {"2"}, "traffic did not go back to version 2"
