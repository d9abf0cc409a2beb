"""Tenants and keys through a real `kapell up`: declared in YAML, keys made by `kapell keys`,
enforced by the gateway for the official openai client, revoked while it runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.local.conftest import Instance

MODEL = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: NAME}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.2", "--speedup", "50"]}
  scaling: {minReplicas: 1, maxReplicas: 1}
"""
TENANT = """\
apiVersion: kapell.dev/v1alpha1
kind: Tenant
metadata: {name: team-a}
spec: {models: [chat], requestsPerMinute: RPM}
"""


def spec(rpm: int = 600) -> str:
    models = "---\n".join(MODEL.replace("NAME", n) for n in ("chat", "other"))
    return f"{models}---\n{TENANT.replace('RPM', str(rpm))}"


def chat(instance: Instance, key: str, model: str = "chat") -> str | None:
    client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content


def create_key(instance: Instance, *args: str) -> tuple[str, str]:
    """`kapell keys create`: (key id, the key printed once)."""
    done = instance.kapell("keys", "create", *args)
    assert done.returncode == 0, done.stderr
    first, key = done.stdout.strip().splitlines()
    return first.split()[1], key


def test_a_key_serves_its_model_only_and_stops_when_revoked(
    kapell_up: Callable[..., Instance],
) -> None:
    instance = kapell_up(spec(), ready=2)
    key_id, key = create_key(instance, "team-a")
    assert key.startswith("sk-kapell-") and key_id in instance.kapell("keys", "list").stdout

    assert chat(instance, key)
    with pytest.raises(openai.PermissionDeniedError) as other:
        chat(instance, key, "other")
    with pytest.raises(openai.PermissionDeniedError) as unknown:
        chat(instance, key, "nowhere")
    assert other.value.response.text == unknown.value.response.text.replace("nowhere", "other")
    no_key = httpx.post(instance.gateway_url + "/v1/chat/completions", json={"model": "chat"})
    assert no_key.status_code == 401

    elsewhere = instance.kapell("keys", "revoke", key_id, "-n", "team-b")
    assert elsewhere.returncode == 1, "a key is revoked only in its namespace, as on a cluster"
    assert elsewhere.stderr.startswith(f"error: no API key with id '{key_id}' in namespace")
    revoked = instance.kapell("keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    with pytest.raises(openai.AuthenticationError):
        chat(instance, key)
    assert key_id not in instance.kapell("keys", "list").stdout


def test_quota_429_with_retry_after_and_keys_survive_a_restart(
    kapell_up: Callable[..., Instance], tmp_path: Path
) -> None:
    instance = kapell_up(spec(rpm=2), ready=2)
    _, key = create_key(instance, "team-a")
    chat(instance, key)
    chat(instance, key)
    with pytest.raises(openai.RateLimitError) as refused:
        chat(instance, key)
    assert int(refused.value.response.headers["retry-after"]) >= 1

    instance.process.terminate()  # SIGTERM: a clean stop, then the same state directory again
    instance.process.wait(timeout=45)
    again = kapell_up(None, ready=2)
    assert chat(again, key)
    assert (tmp_path / "state" / "state.db").stat().st_mode & 0o777 == 0o600


def test_keys_are_checked_against_the_tenant_and_the_gateway_says_it_is_open(
    kapell_up: Callable[..., Instance],
) -> None:
    instance = kapell_up(MODEL.replace("NAME", "chat"), ready=1)
    assert chat(instance, "anything")  # no Tenant: open
    missing = instance.kapell("keys", "create", "team-a")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: tenant 'team-a' not found")

    tenant = Path(instance.state_dir.parent / "tenant.yaml")
    tenant.write_text(TENANT.replace("RPM", "0"))
    assert instance.kapell("apply", "-f", str(tenant)).returncode == 0
    listed = instance.kapell("get", "tenants").stdout.splitlines()
    assert listed[0].split() == ["NAME", "MODELS", "RPM", "TPM", "AGE"]
    assert listed[1].split()[:4] == ["team-a", "chat", "-", "-"]
    outside = instance.kapell("keys", "create", "team-a", "--models", "other")
    assert outside.returncode == 1 and "not among tenant 'team-a'" in outside.stderr
    with pytest.raises(openai.AuthenticationError):
        chat(instance, "anything")  # a Tenant exists now: keys are required
    _, key = create_key(instance, "team-a", "--models", "chat")
    assert chat(instance, key)
    assert instance.kapell("delete", "tenant", "team-a").returncode == 0
    assert chat(instance, "anything"), "the last Tenant gone: open again"
    assert instance.kapell("keys", "list").stdout.split() == ["ID", "TENANT", "MODELS", "AGE"]

    instance.process.send_signal(2)
    _, stderr = instance.process.communicate(timeout=45)
    lines = stderr.splitlines()
    assert any("gateway open: no Tenant declared" in line for line in lines), stderr
    assert any("gateway: 1 tenant(s), 1 API key(s)" in line for line in lines), stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not a usable kubeconfig: Configuration file"),
        ("clusters: [", "not a usable kubeconfig: while parsing"),
        ("[1]", "not a usable kubeconfig: 'list' object"),
    ],
)
def test_a_bad_kubeconfig_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "kapell.cli", "keys", "list", "--kubeconfig", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: {path}: {message}")
