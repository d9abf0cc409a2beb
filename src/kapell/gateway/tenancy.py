"""API keys, tenants and their request and token quotas.

Keys are looked up by their SHA-256 (``api.tenant.hash_api_key``); the gateway never holds a
plain key after hashing the one a request presents. The table can be replaced while serving
(``Tenants.update``: a Tenant applied, a key created or revoked) without resetting quotas. Quotas are token buckets refilled
continuously (limit per minute / 60 per second), so a tenant may burst up to a minute's
allowance and is then held to its rate. Tokens are charged after a response, with the
counts the engine reported; a tenant over its token budget is refused until the bucket
refills past zero.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kapell.api.tenant import ApiKey, hash_api_key
from kapell.api.tenant import Tenant as TenantResource
from kapell.gateway.config import TenantConfig
from kapell.gateway.errors import GatewayError

OPEN_TENANT = "anonymous"
"""The tenant every request belongs to when no tenants are configured."""


class TokenBucket:
    """``capacity`` units refilled at ``capacity / 60`` per second; 0 capacity = unlimited."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.capacity = float(per_minute)
        self._rate_per_s = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._updated_s = clock()

    def _refill(self) -> None:
        now_s = self._clock()
        self._level = min(self.capacity, self._level + (now_s - self._updated_s) * self._rate_per_s)
        self._updated_s = now_s

    def seconds_until_positive(self, amount: float = 0.0) -> float:
        """0 if ``amount`` can be taken now (and more than 0 is left), else the wait."""
        if self.capacity <= 0:
            return 0.0
        self._refill()
        missing = amount - self._level if amount > 0 else -self._level
        if self._level > 0 and missing <= 0:
            return 0.0
        return max(missing, 1e-3) / self._rate_per_s

    def take(self, amount: float) -> None:
        """Remove ``amount`` (the level may go negative: a debt paid by waiting)."""
        if self.capacity > 0:
            self._refill()
            self._level -= amount


@dataclass
class Tenant:
    """A tenant as seen through one key: identity, the models the key allows (None: every
    model) and the tenant's live quota buckets, shared by all its keys."""

    name: str
    models: frozenset[str] | None
    requests: TokenBucket
    tokens: TokenBucket

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def admit(self) -> None:
        """Charge one request, or raise a 429 saying which limit and when to retry."""
        wait_s = self.requests.seconds_until_positive(1.0)
        if wait_s > 0:
            raise _quota_error("requests per minute", wait_s)
        wait_s = self.tokens.seconds_until_positive()
        if wait_s > 0:
            raise _quota_error("tokens per minute", wait_s)
        self.requests.take(1.0)


def _quota_error(limit: str, wait_s: float) -> GatewayError:
    return GatewayError(
        429,
        f"rate limit reached: this API key's {limit} quota is used up; retry after "
        f"{math.ceil(wait_s)}s",
        type="rate_limit_exceeded",
        code="rate_limit_exceeded",
        headers={"retry-after": str(math.ceil(wait_s))},
    )


class Tenants:
    """Resolves the ``Authorization`` header to a tenant."""

    def __init__(
        self, configs: Sequence[TenantConfig] = (), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[tuple[int, int], TokenBucket, TokenBucket]] = {}
        self._by_key_hash: dict[str, Tenant] = {}
        self._open: Tenant | None = None
        self.update(configs)

    def update(self, configs: Sequence[TenantConfig]) -> None:
        """Serve ``configs`` from now on. A tenant whose limits are unchanged keeps its buckets,
        so creating or revoking a key resets no one's quota."""
        buckets: dict[str, tuple[tuple[int, int], TokenBucket, TokenBucket]] = {}
        by_key_hash: dict[str, Tenant] = {}
        for config in configs:
            limits = (config.requests_per_minute, config.tokens_per_minute)
            kept = self._buckets.get(config.name)
            if kept is None or kept[0] != limits:
                kept = (
                    limits,
                    TokenBucket(limits[0], self._clock),
                    TokenBucket(limits[1], self._clock),
                )
            buckets[config.name] = kept
            for key_hash in config.api_key_sha256:
                models = _allowed(config.models, config.key_models.get(key_hash, frozenset()))
                by_key_hash[key_hash.lower()] = Tenant(config.name, models, kept[1], kept[2])
        self._buckets, self._by_key_hash = buckets, by_key_hash
        self._open = (
            None
            if configs
            else Tenant(OPEN_TENANT, None, TokenBucket(0, self._clock), TokenBucket(0, self._clock))
        )

    def summary(self) -> str:
        """One line for the console at start: open, or how many tenants and keys."""
        if self._open is not None:
            return "gateway open: no Tenant declared, no API key needed"
        return (
            f"gateway: {len(self._buckets)} tenant(s), {len(self._by_key_hash)} API key(s); "
            "requests need one"
        )

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of a ``Bearer`` key, or a 401 that says what is missing."""
        if self._open is not None:
            return self._open
        if not authorization or not authorization.lower().startswith("bearer "):
            raise GatewayError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        tenant = self._by_key_hash.get(hash_api_key(authorization[7:].strip()))
        if tenant is None:
            raise GatewayError(401, "invalid API key", code="invalid_api_key")
        return tenant


def _allowed(tenant_models: frozenset[str], key_models: frozenset[str]) -> frozenset[str] | None:
    """What a key may call: its own list within the tenant's (empty lists mean no narrowing)."""
    if not tenant_models:
        return key_models or None
    return tenant_models & key_models if key_models else tenant_models


def tenant_configs(tenants: Iterable[TenantResource], keys: Iterable[ApiKey]) -> list[TenantConfig]:
    """The gateway's table from declared Tenants and stored keys (both modes build it here).

    A key whose Tenant is gone is left out: it stops working with its tenant.
    """
    keys_of: dict[tuple[str, str], list[ApiKey]] = defaultdict(list)
    for key in keys:
        keys_of[key.namespace, key.tenant].append(key)
    configs = []
    for tenant in tenants:
        mine = keys_of[tenant.metadata.namespace, tenant.metadata.name]
        configs.append(
            TenantConfig(
                name=tenant.metadata.name,
                api_key_sha256=[key.sha256 for key in mine],
                models=frozenset(tenant.spec.models),
                requests_per_minute=tenant.spec.requests_per_minute,
                tokens_per_minute=tenant.spec.tokens_per_minute,
                key_models={key.sha256: frozenset(key.models) for key in mine if key.models},
            )
        )
    return configs
