"""The gateway's prompt routes in front of stub engines, called with the openai client.

The split is the one a rollout controller writes (version 1 stable at 50%, version 2 canary
at 50%); these tests check what the gateway does with it: the rendered message and model
the engine receives, the sticky split, streaming, the per-version counts and feedback.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import openai
import pytest

from conftest import Stack
from kapell.api.prompt import Prompt, PromptStatus, PromptVersion, VersionWeight
from kapell.api.tenant import hash_api_key
from kapell.gateway.config import TenantConfig


def _prompt(slow: str | None = None) -> tuple[Prompt, list[PromptVersion]]:
    rollout = {} if slow is None else {"latencyThreshold": slow}
    prompt = Prompt.model_validate(
        {
            "metadata": {"name": "greet"},
            "spec": {"model": "tiny", "version": 2, "template": "Hi {{name}}!",
                     "rollout": rollout},
        }
    )  # fmt: skip
    status = PromptStatus(
        stable_version=1,
        canary_version=2,
        versions=[
            VersionWeight(version=1, weight=50, state="Stable"),
            VersionWeight(version=2, weight=50, state="Canary"),
        ],
    )
    versions = [
        PromptVersion(version=1, model="tiny", template="Hello {{name}}.", variables=["name"]),
        PromptVersion(version=2, model="tiny", template="Hi {{name}}!", variables=["name"],
                      role="developer"),
    ]  # fmt: skip
    return prompt.model_copy(update={"status": status}), versions


def _stack(
    make_stack: Callable[..., Stack],
    slow: str | None = None,
    config: dict[str, object] | None = None,
    **engine: float,
) -> Stack:
    stack = make_stack(**(config or {}))
    stack.set_endpoints("tiny", [stack.add_engine("a", **engine)])
    stack.loop_thread.call(lambda: stack.gateway.prompts.update([_prompt(slow)]))
    return stack


def _ask(chat: openai.OpenAI, user: str) -> tuple[str, str]:
    """(the completion's id, the prompt version that answered) for one request as ``user``."""
    raw = chat.chat.completions.with_raw_response.create(
        model="ignored", messages=[{"role": "user", "content": "hey"}], max_tokens=3, user=user,
        extra_body={"prompt": {"id": "greet", "variables": {"name": "Ann"}}},
    )  # fmt: skip
    return raw.parse().id, raw.headers["x-kapell-prompt-version"]


def test_the_engine_gets_the_rendered_version_and_users_stick_to_theirs(
    make_stack: Callable[..., Stack],
) -> None:
    stack = _stack(make_stack)
    chat = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    versions = {_ask(chat, "ann")[1] for _ in range(10)}
    assert len(versions) == 1, "one user was split between versions"
    seen = {_ask(chat, uuid.uuid4().hex)[1] for _ in range(40)}
    assert seen == {"1", "2"}
    received = stack.engines["a"].received
    assert {r["model"] for r in received} == {"tiny"}
    first = {(r["messages"][0]["role"], r["messages"][0]["content"]) for r in received}
    assert first == {("system", "Hello Ann."), ("developer", "Hi Ann!")}
    assert all(r["messages"][1] == {"role": "user", "content": "hey"} for r in received)
    assert "prompt" not in received[0]

    counts = stack.loop_thread.call(lambda: stack.gateway.prompts.counts("Prompt/default/greet"))
    assert counts[1].requests + counts[2].requests == 50
    assert counts[1].errors == counts[2].errors == 0


def test_streams_are_counted_and_slow_answers_noted(make_stack: Callable[..., Stack]) -> None:
    stack = _stack(make_stack, slow="50ms", token_delay_s=0.03)
    chat = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    stream = chat.chat.completions.create(
        model="ignored", messages=[], max_tokens=3, stream=True,
        stream_options={"include_usage": True},
        extra_body={"prompt": {"id": "greet", "version": 2, "variables": {"name": "Bo"}}},
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "t0 t1 t2 "
    counts = stack.loop_thread.call(lambda: stack.gateway.prompts.counts("Prompt/default/greet"))
    assert counts[2].requests == 1 and counts[2].slow == 1  # 3 tokens x 30 ms > 50 ms
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'kapell_prompt_generated_tokens_total{prompt="greet",version="2"} 3.0' in metrics
    assert 'kapell_prompt_version_weight_percent{prompt="greet",version="2"} 50.0' in metrics


def test_feedback_by_version_or_response_id(make_stack: Callable[..., Stack]) -> None:
    stack = _stack(make_stack)
    chat = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    response_id, version = _ask(chat, "ann")
    url = stack.url + "/v1/prompts/greet/feedback"
    by_id = httpx.post(url, json={"response_id": response_id, "score": 0})
    assert by_id.status_code == 200
    assert str(by_id.json()["version"]) == version
    assert httpx.post(url, json={"version": 1, "score": 0.9}).status_code == 200
    counts = stack.loop_thread.call(lambda: stack.gateway.prompts.counts("Prompt/default/greet"))
    assert counts[int(version)].negative == 1
    assert sum(c.feedback for c in counts.values()) == 2
    for body, status, words in [
        ({"version": 7, "score": 1}, 404, "versions of 'greet': 1, 2"),
        ({"version": 1, "score": 3}, 400, "'score' must be a number from 0"),
        ({"score": 1}, 400, "needs 'response_id' or 'version'"),
    ]:
        answer = httpx.post(url, json=body)
        assert answer.status_code == status and words in answer.json()["error"]["message"]
    missing = httpx.post(stack.url + "/v1/prompts/nope/feedback", json={"version": 1, "score": 1})
    assert missing.status_code == 404


def test_responses_without_a_prompt_and_what_it_refuses(
    make_stack: Callable[..., Stack],
) -> None:
    stack = _stack(make_stack)
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    response = client.responses.create(
        model="tiny", instructions="Be brief.", input=[{"role": "user", "content": "hi"}],
        max_output_tokens=2,
    )  # fmt: skip
    assert response.output_text == "tok tok " and response.status == "incomplete"
    sent = stack.engines["a"].received[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert sent["max_tokens"] == 2
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        client.responses.create(model="tiny", input="hi", stream=True)
    with pytest.raises(openai.BadRequestError, match="'model' must be a non-empty string"):
        client.responses.create(model="", input="hi")
    with pytest.raises(openai.NotFoundError, match="model 'absent' does not exist"):
        client.responses.create(model="absent", input="hi")


def test_keys_need_the_prompts_model(make_stack: Callable[..., Stack]) -> None:
    tenants = [
        TenantConfig("alice", [hash_api_key("sk-alice")], frozenset({"tiny"})),
        TenantConfig("bob", [hash_api_key("sk-bob")], frozenset({"other"})),
    ]
    stack = _stack(make_stack, config={"tenants": tenants})
    url = stack.url + "/v1/prompts/greet/feedback"
    body = {"version": 1, "score": 1}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"authorization": "Bearer sk-alice"}).is_success
    bob = httpx.post(url, json=body, headers={"authorization": "Bearer sk-bob"})
    assert bob.status_code == 404 and "prompt 'greet' does not exist" in bob.text
    as_bob = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-bob", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'tiny'"):
        as_bob.responses.create(prompt={"id": "greet", "variables": {"name": "B"}})
