"""A pod's ServiceAccount credentials, as a kubelet mounts them, given to a process as a file.

A kubelet projects a token bound to the pod into ``/var/run/secrets/kubernetes.io/
serviceaccount``; a process on this machine cannot have that path to itself, so the node agent
asks the apiserver for the same bound token (TokenRequest) and writes a kubeconfig with it into
the pod's directory, named by ``KUBECONFIG``. Clients that look for in-cluster credentials and
then ``KUBECONFIG`` (client-go, lightkube) then act as the pod's ServiceAccount, with exactly
its RBAC.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

TOKEN_EXPIRATION_S = 24 * 3600
"""Long enough for a dev cluster's life: the agent does not rotate tokens as a kubelet does."""


def wants_token(pod: Mapping[str, Any]) -> bool:
    """Whether the pod gets its ServiceAccount's credentials (the API's default: yes)."""
    return (pod.get("spec") or {}).get("automountServiceAccountToken") is not False


def api_cluster(kubeconfig: Path) -> dict[str, Any]:
    """The cluster entry (server, CA) of ``kubeconfig``'s current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    return dict(next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"]))


async def write_kubeconfig(
    client: AsyncClient, pod: Mapping[str, Any], cluster: Mapping[str, Any], path: Path
) -> Path:
    """Request a token for the pod's ServiceAccount, bound to the pod, and write a kubeconfig
    that uses it (mode 0600) at ``path``."""
    meta = pod["metadata"]
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name=account, namespace=meta["namespace"]),
        spec=TokenRequestSpec(
            audiences=[],
            expirationSeconds=TOKEN_EXPIRATION_S,
            boundObjectRef=BoundObjectReference(
                kind="Pod", apiVersion="v1", name=meta["name"], uid=meta["uid"]
            ),
        ),
    )
    issued = await client.create(request, account, namespace=meta["namespace"])
    assert issued.status is not None  # the apiserver always answers with the token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": dict(cluster)}],
        "users": [{"name": account, "user": {"token": issued.status.token}}],
        "contexts": [
            {
                "name": "pod",
                "context": {"cluster": "cluster", "user": account, "namespace": meta["namespace"]},
            }
        ],
        "current-context": "pod",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        yaml.safe_dump(config, out)
    return path
