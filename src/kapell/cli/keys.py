"""``kapell keys create | list | revoke``: API keys of Tenants, locally or on a cluster.

The key is made here and shown once; only its record (``api.tenant.ApiKey``: the hash) leaves
this process, to the local instance's admin API or, with ``--kubeconfig``, to the tenant's
Secret. Both stores check a new key the same way (``api.tenant.key_problem``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call

if TYPE_CHECKING:
    from kapell.api.tenant import ApiKey

keys_app = typer.Typer(
    help="API keys of Tenants: create (shown once), list, revoke.", no_args_is_help=True
)

Kubeconfig = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Work on this cluster's Tenants (writes their Secrets) instead of the local instance.",
    ),
]
Namespace = Annotated[str, typer.Option("-n", "--namespace", help="The Tenants' namespace.")]


class KeyStore(Protocol):
    def create(self, key: ApiKey) -> None: ...
    def api_keys(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str) -> ApiKey: ...


class LocalKeys:
    """Keys of the running ``kapell up``, through its admin API."""

    def __init__(self, state_dir: Path, namespace: str) -> None:
        self._state_dir = state_dir
        self._namespace = namespace

    def create(self, key: ApiKey) -> None:
        call(self._state_dir, "POST", "/keys", key.model_dump(by_alias=True))

    def api_keys(self) -> list[ApiKey]:
        from kapell.api.tenant import ApiKey

        items = call(self._state_dir, "GET", "/keys")["items"]
        keys = [ApiKey.model_validate(item) for item in items]
        return [k for k in keys if k.namespace == self._namespace]

    def revoke(self, key_id: str) -> ApiKey:
        """Like on a cluster, only a key of this namespace."""
        from kapell.api.tenant import ApiKey, unknown_key

        if key_id not in {k.id for k in self.api_keys()}:
            raise unknown_key(key_id, self._namespace)
        return ApiKey.model_validate(call(self._state_dir, "DELETE", f"/keys/{key_id}"))


def _store(kubeconfig: Path | None, namespace: str, state_dir: Path) -> KeyStore:
    if kubeconfig is None:
        return LocalKeys(state_dir, namespace)
    import yaml  # what lightkube reads kubeconfigs with
    from lightkube import ConfigError

    from kapell.api.errors import KapellError
    from kapell.backends.kubernetes.tenants import KubeKeys
    from kapell.cli.operator import kube_client

    try:
        return KubeKeys(kube_client(kubeconfig), namespace)
    except (
        ConfigError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        yaml.YAMLError,
    ) as exc:
        reason = " ".join(str(exc).split())  # YAML errors span lines
        raise KapellError(f"{kubeconfig}: not a usable kubeconfig: {reason}") from None


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Argument(help="The Tenant the key belongs to.")],
    models: Annotated[
        str,
        typer.Option(
            "--models", help="Comma-separated models this key may call (default: the tenant's)."
        ),
    ] = "",
    namespace: Namespace = "default",
    kubeconfig: Kubeconfig = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Make a key for TENANT and print it once; only its SHA-256 is stored."""
    from pydantic import ValidationError

    from kapell.api.errors import KapellError
    from kapell.api.tenant import new_api_key
    from kapell.backends.local.store import utc_now

    wanted = [m.strip() for m in models.split(",") if m.strip()]
    try:
        plain, record = new_api_key(namespace, tenant, wanted, utc_now())
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(map(str, error["loc"]))
        raise KapellError(f"keys create: {field}: {error['msg']}") from None
    _store(kubeconfig, namespace, state_dir).create(record)
    typer.echo(f"key {record.id} created for tenant {tenant}; it is shown only this once:")
    typer.echo(plain)


@keys_app.command("list")
def list_keys(
    namespace: Namespace = "default",
    kubeconfig: Kubeconfig = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List keys by id, tenant and models (never the keys themselves)."""
    from kapell.cli.output import age, print_table

    rows = [
        [k.id, k.tenant, ",".join(k.models) or "(tenant's)", age(k.created)]
        for k in _store(kubeconfig, namespace, state_dir).api_keys()
    ]
    print_table(["ID", "TENANT", "MODELS", "AGE"], rows)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `kapell keys list`.")],
    namespace: Namespace = "default",
    kubeconfig: Kubeconfig = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Revoke a key: the gateway refuses it (401) from the next request."""
    key = _store(kubeconfig, namespace, state_dir).revoke(key_id)
    typer.echo(f"key {key.id} of tenant {key.tenant} revoked")
