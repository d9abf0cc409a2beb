"""Tenants on a cluster: keys made by `kapell keys --kubeconfig` land in a Secret (the hash
only), and a gateway kept current by ``KubeTenants`` admits, refuses and forgets them: one in
this process, and `kapell gateway` in front of a Model's pod."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubeobjects import eventually
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Secret
from openai import OpenAI, PermissionDeniedError
from operators import apply, model, wait_ready
from test_cluster_gateway import ClusterGateway, gateway  # noqa: F401  (the fixture)
from test_operator_serving import FAST_SIM, serving_model
from tests.asgi import AsgiClient

from kapell.api.loader import load_text
from kapell.api.model import Model
from kapell.backends.kubernetes.tenants import KubeTenants, TenantResource, secret_name
from kapell.devcluster import DevCluster
from kapell.gateway.app import Gateway
from kapell.gateway.config import GatewayConfig
from kapell.gateway.endpoints import StaticEndpointSource
from kapell.gateway.tenancy import tenant_configs

TENANT = "team-a"


def kapell_keys(kubeconfig: Path, namespace: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kapell.cli", "keys", *args, "-n", namespace,
         "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def gateway_for(*names: str) -> Gateway:
    """A gateway that knows ``names``, without replicas: tenancy answers before routing does."""
    source = StaticEndpointSource()
    for name in names:
        text = f"kind: Model\napiVersion: kapell.dev/v1alpha1\nmetadata: {{name: {name}}}\n"
        [model] = load_text(text + "spec: {source: {uri: h100-llama3-8b}, engine: {name: sim}}")
        assert isinstance(model, Model)
        source.add_model(model)
    return Gateway(source, GatewayConfig(activation_timeout_s=1.0))  # admitted: 503 at once


def chat(client: AsgiClient, model: str, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def models_seen(client: AsgiClient, key: str) -> list[str] | None:
    """The models ``key`` sees, or None while the gateway refuses it."""
    answer = client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
    return [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else None


def test_cluster_keys_reach_the_gateway_through_watches(
    dev_cluster: DevCluster, kube: Client, kapell_crds: str, namespace: str
) -> None:
    served = gateway_for("chat", "other")
    client = AsgiClient(served.app)
    watcher = KubeTenants(
        kube, namespace, lambda tenants, keys: served.tenants.update(tenant_configs(tenants, keys))
    )
    watcher.start()
    try:
        assert "gateway open: no Tenant declared" in served.tenants.summary()
        tenant = {"metadata": {"name": TENANT}, "spec": {"models": ["chat"]}}
        kube.create(TenantResource(tenant), namespace=namespace)  # type: ignore[arg-type]
        eventually(lambda: "1 tenant(s)" in served.tenants.summary() or None, "the Tenant seen")
        assert chat(client, "chat").status_code == 401

        created = kapell_keys(dev_cluster.kubeconfig, namespace, "create", TENANT).splitlines()
        key_id, key = created[0].split()[1], created[1]
        assert eventually(lambda: models_seen(client, key), "the key admitted") == ["chat"]
        other, unknown = chat(client, "other", key), chat(client, "nowhere", key)
        assert other.status_code == unknown.status_code == 403
        assert other.text.replace("other", "X") == unknown.text.replace("nowhere", "X")

        [stored] = kube.get(Secret, secret_name(TENANT), namespace=namespace).data.values()
        record = json.loads(base64.b64decode(stored))
        assert record["id"] == key_id and key not in json.dumps(record)
        assert key_id in kapell_keys(dev_cluster.kubeconfig, namespace, "list")

        kapell_keys(dev_cluster.kubeconfig, namespace, "revoke", key_id)
        eventually(lambda: models_seen(client, key) is None or None, "the key refused")
        assert chat(client, "chat", key).status_code == 401

        kube.delete(TenantResource, TENANT, namespace=namespace)
        eventually(lambda: "open" in served.tenants.summary() or None, "the gateway open again")

        def secret_gone() -> bool | None:  # the garbage collector follows the owner reference
            try:
                kube.get(Secret, secret_name(TENANT), namespace=namespace)
            except ApiError as exc:
                return exc.status.code == 404 or None
            return None

        eventually(secret_gone, "the tenant's Secret deleted with it")
    finally:
        watcher.stop()


def test_concurrent_key_creations_all_land_in_the_secret(
    dev_cluster: DevCluster, kube: Client, kapell_crds: str, namespace: str
) -> None:
    kube.create(TenantResource({"metadata": {"name": TENANT}, "spec": {}}), namespace=namespace)  # type: ignore[arg-type]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(
            pool.map(
                lambda _: kapell_keys(dev_cluster.kubeconfig, namespace, "create", TENANT), range(4)
            )
        )
    ids = {output.split()[1] for output in outputs}
    secret = kube.get(Secret, secret_name(TENANT), namespace=namespace)
    assert len(ids) == 4 and set(secret.data or {}) == ids


def test_a_key_through_the_in_cluster_gateway(
    dev_cluster: DevCluster,
    kube: Client,
    kubectl: Any,
    namespace: str,
    gateway: ClusterGateway,  # noqa: F811  (the fixture imported above)
) -> None:
    tenant = {"apiVersion": "kapell.dev/v1alpha1", "kind": "Tenant",
              "metadata": {"name": TENANT, "namespace": namespace}, "spec": {"models": ["chat"]}}  # fmt: skip
    other = model("other", namespace, replicas=0)  # declared, no replica: still refused first
    apply(kubectl, serving_model("chat", namespace, args=FAST_SIM), other, tenant)
    wait_ready(kube, "chat", namespace)
    created = kapell_keys(dev_cluster.kubeconfig, namespace, "create", TENANT).splitlines()
    key_id, key = created[0].split()[1], created[1]
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    eventually(lambda: [m.id for m in client.models.list()] == ["chat"] or None, "key admitted")

    def ask(name: str) -> str | None:
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        return reply.choices[0].message.content

    assert ask("chat")
    refused = []
    for name in ("other", "nowhere"):
        with pytest.raises(PermissionDeniedError) as caught:
            ask(name)
        refused.append(caught.value.response.text.replace(name, "X"))
    assert refused[0] == refused[1]
    assert (
        httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "chat"}).status_code == 401
    )

    kapell_keys(dev_cluster.kubeconfig, namespace, "revoke", key_id)
    models_url, bearer = f"{gateway.url}/v1/models", {"authorization": f"Bearer {key}"}
    eventually(lambda: httpx.get(models_url, headers=bearer).status_code == 401 or None, "revoked")
