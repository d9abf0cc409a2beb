"""API keys, tenants and their request and token quotas.

Keys are looked up by their SHA-256 (``config.hash_api_key``); the gateway never holds a
plain key after hashing the one a request presents. Quotas are token buckets refilled
continuously (limit per minute / 60 per second), so a tenant may burst up to a minute's
allowance and is then held to its rate. Tokens are charged after a response, with the
counts the engine reported; a tenant over its token budget is refused until the bucket
refills past zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kapell.gateway.config import TenantConfig, hash_api_key
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
    """A tenant's identity, allowed models and live quota buckets."""

    name: str
    models: frozenset[str]
    requests: TokenBucket
    tokens: TokenBucket

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models

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
        self, configs: Sequence[TenantConfig], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._by_key_hash: dict[str, Tenant] = {}
        for config in configs:
            tenant = Tenant(
                name=config.name,
                models=frozenset(config.models),
                requests=TokenBucket(config.requests_per_minute, clock),
                tokens=TokenBucket(config.tokens_per_minute, clock),
            )
            for key_hash in config.api_key_sha256:
                self._by_key_hash[key_hash.lower()] = tenant
        self._open = (
            None
            if configs
            else Tenant(OPEN_TENANT, frozenset(), TokenBucket(0, clock), TokenBucket(0, clock))
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
