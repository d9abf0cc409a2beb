"""API keys, tenants and token-bucket quota arithmetic, on a hand-driven clock."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kapell.api.tenant import hash_api_key
from kapell.gateway.config import TenantConfig
from kapell.gateway.errors import GatewayError
from kapell.gateway.tenancy import OPEN_TENANT, Tenants, TokenBucket


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
