"""Tenants (who may call which models, how often) and the API keys that belong to them.

A ``Tenant`` is declared like any other kind. Its keys are not part of the spec: they are made
by ``kapell keys create``, which shows the plain key once and stores only an ``ApiKey`` record
with the key's SHA-256 (locally in the state database, on a cluster in a Secret per tenant).
Both modes build records, check them and hash keys with the functions here.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Literal

from pydantic import Field

from kapell.api.errors import NotFoundError
from kapell.api.meta import Name, Resource, Spec, Status

KEY_PREFIX = "sk-kapell-"
KEY_ID_CHARS = 12
"""Hex digits of a key's SHA-256 that name it in ``keys list`` and ``keys revoke``."""


class TenantSpec(Spec):
    """What a tenant's keys may do. An empty ``models`` list means every model; 0 = no limit."""

    models: list[Name] = Field(default_factory=list)
    requests_per_minute: Annotated[int, Field(ge=0)] = 0
    tokens_per_minute: Annotated[int, Field(ge=0)] = 0


class Tenant(Resource):
    kind: Literal["Tenant"] = "Tenant"
    spec: TenantSpec = Field(default_factory=TenantSpec)
    status: Status = Field(default_factory=Status)


class ApiKey(Spec):
    """The stored form of one key: never the key, only its hash and what it may call.

    ``models`` narrows the tenant's models for this key (empty: the tenant's models).
    """

    id: str
    namespace: Name
    tenant: Name
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    models: list[Name] = Field(default_factory=list)
    created: str = ""


def hash_api_key(api_key: str) -> str:
    """The stored form of an API key: hex SHA-256.

    Keys are 256-bit random tokens (not passwords), so a fast unsalted hash is enough: it cannot
    be reversed or guessed, and a leaked store does not leak usable keys.
    """
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_id(sha256: str) -> str:
    """A key's public name: the first hex digits of its hash (a key's owner can recompute it)."""
    return sha256[:KEY_ID_CHARS]


def new_api_key(namespace: str, tenant: str, models: list[str], created: str) -> tuple[str, ApiKey]:
    """A fresh random key and the record to store for it; the key itself is shown once."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = hash_api_key(plain)
    record = ApiKey(
        id=key_id(digest),
        namespace=namespace,
        tenant=tenant,
        sha256=digest,
        models=sorted(set(models)),
        created=created,
    )
    return plain, record


def key_problem(tenant: Tenant | None, key: ApiKey) -> str | None:
    """Why ``key`` may not be stored for ``tenant`` (None if it may): the same check in both
    modes, so a key is refused for the same reason locally and on a cluster."""
    if tenant is None:
        return (
            f"tenant {key.tenant!r} not found in namespace {key.namespace!r}; declare it first "
            "(kind: Tenant, with `kapell apply -f` or `kubectl apply -f`)"
        )
    allowed = set(tenant.spec.models)
    outside = sorted(set(key.models) - allowed) if allowed else []
    if outside:
        return (
            f"--models {','.join(outside)}: not among tenant {key.tenant!r}'s models "
            f"({', '.join(sorted(allowed))})"
        )
    return None


def unknown_key(key_id: str, namespace: str) -> NotFoundError:
    """The error for revoking a key id that is not there (the same in both modes)."""
    return NotFoundError(
        f"no API key with id {key_id!r} in namespace {namespace!r}; see `kapell keys list`"
    )
