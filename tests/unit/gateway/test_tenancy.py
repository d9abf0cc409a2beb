"""API keys, tenants and token-bucket quota arithmetic, on a hand-driven clock."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kapell.api.loader import load_text
from kapell.api.tenant import Tenant as TenantResource
from kapell.api.tenant import hash_api_key, new_api_key
from kapell.gateway.config import TenantConfig
from kapell.gateway.errors import GatewayError
from kapell.gateway.tenancy import OPEN_TENANT, Tenants, TokenBucket, tenant_configs


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_api_key_hash_is_hex_sha256() -> None:
    assert hash_api_key("sk-abc") == hashlib.sha256(b"sk-abc").hexdigest()


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_keys_hash_apart_and_each_hash_is_stable(a: str, b: str) -> None:
    assert hash_api_key(a) == hash_api_key(a)
    assert (hash_api_key(a) == hash_api_key(b)) == (a == b)


def test_bucket_refills_at_a_minute_s_allowance_per_60_s() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock)  # 1 per second
    bucket.take(60)
    assert bucket.seconds_until_positive(1.0) == pytest.approx(1.0)
    clock.now_s += 0.5
    assert bucket.seconds_until_positive(1.0) == pytest.approx(0.5)
    clock.now_s += 0.5
    assert bucket.seconds_until_positive(1.0) == 0.0


def test_bucket_debt_is_paid_by_waiting_and_never_overfills() -> None:
    clock = Clock()
    bucket = TokenBucket(120, clock)  # 2 per second
    bucket.take(180)  # 60 in debt
    assert bucket.seconds_until_positive() == pytest.approx(30.0, rel=1e-3)
    clock.now_s += 3600
    assert bucket.seconds_until_positive(120.0) == 0.0
    assert bucket.seconds_until_positive(121.0) > 0, "capped at one minute's allowance"


@given(st.integers(1, 10_000), st.floats(0, 50_000), st.floats(0, 600))
def test_bucket_wait_is_exactly_what_refill_needs(
    per_minute: int, taken: float, wait_s: float
) -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute, clock)
    bucket.take(taken)
    clock.now_s += wait_s
    level = min(per_minute, per_minute - taken + wait_s * per_minute / 60)
    assume(abs(level - 1.0) > 1e-6)  # float rounding decides the exact boundary
    needed = bucket.seconds_until_positive(1.0)
    if level > 1.0:
        assert needed == 0.0
    else:
        assert needed == pytest.approx(max(1.0 - level, 1e-3) * 60 / per_minute, rel=1e-6)


def test_zero_capacity_bucket_is_unlimited() -> None:
    bucket = TokenBucket(0, Clock())
    bucket.take(10**9)
    assert bucket.seconds_until_positive(10**9) == 0.0


def _tenants(clock: Clock, **limits: int) -> Tenants:
    config = TenantConfig("team-a", [hash_api_key("key-a")], frozenset({"m1"}), **limits)
    return Tenants([config], clock)


def test_no_tenants_means_open_and_every_model_allowed() -> None:
    tenant = Tenants([]).authenticate(None)
    assert tenant.name == OPEN_TENANT and tenant.may_use("anything")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer wrong", "bearer"])
def test_missing_or_wrong_keys_are_401s(header: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        _tenants(Clock()).authenticate(header)
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key"


def test_key_resolves_to_its_tenant_and_its_models_only() -> None:
    tenant = _tenants(Clock()).authenticate("Bearer key-a")
    assert tenant.name == "team-a"
    assert tenant.may_use("m1") and not tenant.may_use("m2")


def test_requests_per_minute_quota_then_429_with_retry_after() -> None:
    clock = Clock()
    tenant = _tenants(clock, requests_per_minute=3).authenticate("Bearer key-a")
    for _ in range(3):
        tenant.admit()
    with pytest.raises(GatewayError) as caught:
        tenant.admit()
    assert caught.value.status == 429
    assert caught.value.headers["retry-after"] == "20"  # one request's worth at 3/min
    assert "requests per minute" in caught.value.message
    clock.now_s += 20
    tenant.admit()


def test_tokens_per_minute_quota_refuses_until_the_debt_is_paid() -> None:
    clock = Clock()
    tenant = _tenants(clock, tokens_per_minute=600).authenticate("Bearer key-a")
    tenant.admit()
    tenant.tokens.take(900)  # a response larger than the whole budget
    with pytest.raises(GatewayError) as caught:
        tenant.admit()
    assert "tokens per minute" in caught.value.message
    assert caught.value.headers["retry-after"] == "30"  # 300 tokens of debt at 10/s
    clock.now_s += 30.1
    tenant.admit()


def _config(name: str, key: str, models: set[str], **extra: Any) -> TenantConfig:
    return TenantConfig(name, [hash_api_key(key)], frozenset(models), **extra)


def test_a_key_s_models_narrow_its_tenant_s_never_widen_them() -> None:
    narrow = TenantConfig(
        "t", [hash_api_key("k1"), hash_api_key("k2"), hash_api_key("k3")], frozenset({"a", "b"}),
        key_models={hash_api_key("k2"): frozenset({"b"}), hash_api_key("k3"): frozenset({"c"})},
    )  # fmt: skip
    tenants = Tenants([narrow, _config("open", "k4", set(), key_models={
        hash_api_key("k4"): frozenset({"z"})})])  # fmt: skip
    k1, k2, k3, k4 = (tenants.authenticate(f"Bearer k{i}") for i in range(1, 5))
    assert k1.may_use("a") and k1.may_use("b") and not k1.may_use("c")
    assert k2.may_use("b") and not k2.may_use("a")
    assert not any(k3.may_use(m) for m in "abc"), "outside the tenant's list: nothing"
    assert k4.may_use("z") and not k4.may_use("a"), "a tenant of every model, a key of one"


def test_update_keeps_quota_for_unchanged_limits_and_drops_revoked_keys() -> None:
    clock = Clock()
    tenants = Tenants([_config("t", "k1", set(), requests_per_minute=1)], clock)
    tenants.authenticate("Bearer k1").admit()
    both = TenantConfig("t", [hash_api_key("k1"), hash_api_key("k2")], requests_per_minute=1)
    tenants.update([both])  # a key created: the tenant's bucket is the same one
    with pytest.raises(GatewayError) as caught:
        tenants.authenticate("Bearer k2").admit()
    assert caught.value.status == 429
    tenants.update([TenantConfig("t", [hash_api_key("k2")], requests_per_minute=2)])
    tenants.authenticate("Bearer k2").admit()  # new limits: a fresh bucket
    with pytest.raises(GatewayError) as revoked:
        tenants.authenticate("Bearer k1")
    assert revoked.value.status == 401


def test_summary_says_open_or_how_many_tenants_and_keys() -> None:
    tenants = Tenants([])
    assert "gateway open: no Tenant declared" in tenants.summary()
    tenants.update([_config("t", "k1", set()), TenantConfig("u", [])])
    assert "2 tenant(s), 1 API key(s)" in tenants.summary()
    with pytest.raises(GatewayError):
        tenants.authenticate(None)  # a tenant without keys still closes the gateway


def test_tenant_configs_join_keys_to_their_tenant_by_namespace_and_name() -> None:
    [tenant, elsewhere] = load_text(
        "kind: Tenant\napiVersion: kapell.dev/v1alpha1\nmetadata: {name: t}\n"
        "spec: {models: [a], tokensPerMinute: 9}\n---\n"
        "kind: Tenant\napiVersion: kapell.dev/v1alpha1\nmetadata: {name: t, namespace: x}\n"
    )
    _, mine = new_api_key("default", "t", ["a"], "")
    _, orphan = new_api_key("default", "gone", [], "")
    assert isinstance(tenant, TenantResource) and isinstance(elsewhere, TenantResource)
    [config] = tenant_configs([tenant], [mine, orphan])
    assert config.api_key_sha256 == [mine.sha256] and config.tokens_per_minute == 9
    assert config.key_models == {mine.sha256: frozenset({"a"})}
    [other] = tenant_configs([elsewhere], [mine])
    assert other.api_key_sha256 == [], "a key of namespace default is not namespace x's"
