"""Tenants and their API keys on a cluster: ``tenants.kapell.dev`` objects and one Secret each.

A tenant's Secret (``kapell-keys-<tenant>``, label ``kapell.dev/tenant``, owned by the Tenant so
it goes with it) holds one entry per key: the key's id mapped to its ``api.tenant.ApiKey``
record as JSON, the hash and never the key. Keys are added and removed by a strategic merge
patch of one entry, so two ``kapell keys`` commands at once cannot drop each other's key.

``KubeKeys`` is what ``kapell keys --kubeconfig`` uses; ``KubeTenants`` keeps a gateway's tenant
table current through two informers (Tenants, and the Secrets that carry the label).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.operators import exists
from lightkube.resources.core_v1 import Secret
from pydantic import ValidationError

from kapell.api.errors import BackendError, KapellError, NotFoundError
from kapell.api.meta import API_GROUP, API_VERSION
from kapell.api.tenant import ApiKey, Tenant, key_problem, unknown_key
from kapell.backends.kubernetes.informer import Informer, Key, wait_synced
from kapell.backends.kubernetes.store import resource_body

log = logging.getLogger(__name__)

TenantResource = create_namespaced_resource(API_GROUP, "v1alpha1", "Tenant", "tenants")
TENANT_LABEL = f"{API_GROUP}/tenant"
SECRET_TYPE = f"{API_GROUP}/api-keys"
SYNC_TIMEOUT_S = 60.0

OnTenants = Callable[[list[Tenant], list[ApiKey]], None]
"""Called with every valid Tenant and every stored key, after each change."""


def secret_name(tenant: str) -> str:
    return f"kapell-keys-{tenant}"


def parse_tenant(raw: dict[str, Any]) -> Tenant | None:
    """A Tenant object as kapell reads it; None (and a warning) if kapell refuses it."""
    try:
        return Tenant.model_validate(resource_body(raw, "Tenant"))
    except ValidationError as exc:
        log.warning("Tenant %s ignored: %s", raw["metadata"]["name"], exc.errors()[0]["msg"])
        return None


def keys_in_secret(raw: dict[str, Any]) -> list[ApiKey]:
    """The key records in a tenant's Secret (``data`` is base64, as the apiserver returns it)."""
    keys = []
    for entry, value in sorted((raw.get("data") or {}).items()):
        try:
            keys.append(ApiKey.model_validate_json(base64.b64decode(value)))
        except (ValueError, ValidationError):
            log.warning("Secret %s: entry %s is not a key record", raw["metadata"]["name"], entry)
    return keys


def _entry(key: ApiKey) -> dict[str, str]:
    return {key.id: base64.b64encode(key.model_dump_json(by_alias=True).encode()).decode()}


def key_secret(key: ApiKey, tenant_uid: str) -> Secret:
    """A tenant's Secret holding its first key, owned by the Tenant object."""
    owner = OwnerReference(
        apiVersion=API_VERSION, kind="Tenant", name=key.tenant, uid=tenant_uid,
        blockOwnerDeletion=False, controller=False,
    )  # fmt: skip
    return Secret(
        metadata=ObjectMeta(
            name=secret_name(key.tenant),
            namespace=key.namespace,
            labels={TENANT_LABEL: key.tenant, "app.kubernetes.io/managed-by": "kapell"},
            ownerReferences=[owner],
        ),
        type=SECRET_TYPE,
        data=_entry(key),
    )


@contextmanager
def _cluster_errors() -> Iterator[None]:
    """The apiserver's refusals and an unreachable cluster as one-line user errors."""
    try:
        yield
    except ApiError as exc:
        raise BackendError(f"the apiserver refused: {exc.status.message}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise BackendError(f"cannot reach the apiserver: {exc}") from None


class KubeKeys:
    """Create, list and revoke keys in one namespace (what ``kapell keys -n NS`` does)."""

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self._namespace = namespace

    def create(self, key: ApiKey) -> None:
        """Store ``key`` in its tenant's Secret, if the Tenant exists and allows its models."""
        with _cluster_errors():
            self._create(key)

    def api_keys(self) -> list[ApiKey]:
        with _cluster_errors():
            return self._api_keys()

    def revoke(self, key_id: str) -> ApiKey:
        """Remove one key's entry; the gateways' watches drop it within moments."""
        with _cluster_errors():
            return self._revoke(key_id)

    def _create(self, key: ApiKey) -> None:
        raw: dict[str, Any] | None = None
        try:
            raw = dict(self._client.get(TenantResource, key.tenant, namespace=key.namespace))
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        tenant = parse_tenant(raw) if raw is not None else None
        problem = key_problem(tenant, key)
        if problem is not None:
            raise (NotFoundError if raw is None else KapellError)(problem)
        assert raw is not None
        try:
            self._add_entry(key)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            try:
                self._client.create(key_secret(key, raw["metadata"]["uid"]))
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
                self._add_entry(key)  # another command created the Secret in between

    def _add_entry(self, key: ApiKey) -> None:
        self._client.patch(
            Secret, secret_name(key.tenant), {"data": _entry(key)}, namespace=key.namespace
        )

    def _api_keys(self) -> list[ApiKey]:
        secrets = self._client.list(
            Secret, namespace=self._namespace, labels={TENANT_LABEL: exists()}
        )
        return sorted((k for s in secrets for k in keys_in_secret(s.to_dict())), key=lambda k: k.id)

    def _revoke(self, key_id: str) -> ApiKey:
        for key in self._api_keys():
            if key.id == key_id:
                self._client.patch(
                    Secret,
                    secret_name(key.tenant),
                    {"data": {key.id: None}},
                    namespace=key.namespace,
                )
                return key
        raise unknown_key(key_id, self._namespace)


class KubeTenants:
    """Keeps a gateway's tenant table equal to the cluster's Tenants and their key Secrets.

    ``on_change(tenants, keys)`` is called once when both informers have listed (``start``
    waits for that) and then after every change, from an informer thread, one call at a time.
    """

    def __init__(self, client: Client, namespace: str, on_change: OnTenants) -> None:
        self._client = client
        self._namespace = namespace
        self._on_change = on_change
        self._lock = threading.Lock()
        self._started = False
        self.tenants: Informer[Tenant | None] = Informer(
            client, TenantResource, parse_tenant, self._changed, namespace=namespace
        )
        self.secrets: Informer[list[ApiKey]] = Informer(
            client,
            Secret,
            keys_in_secret,
            self._changed,
            namespace=namespace,
            labels={TENANT_LABEL: exists()},
        )

    def start(self, timeout_s: float = SYNC_TIMEOUT_S) -> None:
        """Start both watches and return once the first full table has been delivered.

        Without the Tenant CRD the watch could never list: that is said at once instead."""
        try:
            next(
                iter(self._client.list(TenantResource, namespace=self._namespace, chunk_size=1)),
                None,
            )
        except httpx.HTTPStatusError as exc:  # an ApiError, or a bare 404 for an unknown kind
            if exc.response.status_code != 404:
                raise
            raise BackendError(
                "the Tenant CRD (tenants.kapell.dev) is not installed; install the CRDs with "
                "`kapell crds | kubectl apply --server-side -f -`"
            ) from None
        informers: list[Informer[Any]] = [self.tenants, self.secrets]
        for informer in informers:
            informer.start()
        wait_synced(informers, timeout_s)
        with self._lock:
            self._started = True
            self._publish()

    def stop(self) -> None:
        self.tenants.stop()
        self.secrets.stop()

    def _changed(self, key: Key, value: object) -> None:
        with self._lock:
            if self._started:  # before that, start() delivers the whole first listing once
                self._publish()

    def _publish(self) -> None:
        tenants = [t for t in self.tenants.items() if t is not None]
        keys = [k for keys in self.secrets.items() for k in keys]
        self._on_change(tenants, keys)
