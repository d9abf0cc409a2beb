"""Tenants: hashed keys, allowed models (403 that reveals nothing), request and token quotas."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from conftest import Stack
from kapell.api.tenant import hash_api_key
from kapell.gateway.config import TenantConfig


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    tenants = [
        TenantConfig("alice", [hash_api_key("sk-alice")], frozenset({"a", "ghost"}),
                     requests_per_minute=3),
        TenantConfig("bob", [hash_api_key("sk-bob")], frozenset({"b"}), tokens_per_minute=30),
    ]  # fmt: skip
    stack = make_stack(tenants=tenants)
    stack.set_endpoints("a", [stack.add_engine("ea")])
    stack.set_endpoints("b", [stack.add_engine("eb")])
    return stack


def api(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def chat(stack: Stack, key: str, model: str, max_tokens: int = 2) -> object:
    return api(stack, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens
    )


def test_keys_are_required_and_checked(stack: Stack) -> None:
    assert httpx.post(stack.url + "/v1/chat/completions", json={}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        chat(stack, "sk-mallory", "a")


def test_other_tenants_model_is_a_403_like_any_unknown_name(stack: Stack) -> None:
    chat(stack, "sk-alice", "a")
    with pytest.raises(openai.PermissionDeniedError) as theirs:
        chat(stack, "sk-alice", "b")
    with pytest.raises(openai.PermissionDeniedError) as nowhere:
        chat(stack, "sk-alice", "zzz")
    assert str(theirs.value).replace("'b'", "X") == str(nowhere.value).replace("'zzz'", "X")
    assert [m.id for m in api(stack, "sk-alice").models.list()] == ["a"]
    with pytest.raises(openai.NotFoundError):
        chat(stack, "sk-alice", "ghost")  # allowed to alice, but not deployed


def test_request_quota_gives_429_with_retry_after(stack: Stack) -> None:
    for _ in range(3):
        chat(stack, "sk-alice", "a")
    with pytest.raises(openai.RateLimitError) as refused:
        chat(stack, "sk-alice", "a")
    assert "requests per minute" in str(refused.value)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    chat(stack, "sk-bob", "b")  # another tenant is unaffected


def test_token_quota_is_charged_from_usage(stack: Stack) -> None:
    chat(stack, "sk-bob", "b", max_tokens=40)
    with pytest.raises(openai.RateLimitError) as refused:
        chat(stack, "sk-bob", "b")
    assert "tokens per minute" in str(refused.value)
    chat(stack, "sk-alice", "a")


def test_metrics_are_labelled_by_tenant(stack: Stack) -> None:
    chat(stack, "sk-alice", "a")
    text = httpx.get(stack.url + "/metrics").text
    assert 'kapell_gateway_requests_total{code="200",model="a",tenant="alice"} 1.0' in text
