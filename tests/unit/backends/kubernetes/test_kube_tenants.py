"""A tenant's key Secret: a valid manifest holding hashes only, read back into key records."""

from __future__ import annotations

import base64
import logging

import kubernetes_validate
import pytest

from kapell.api.tenant import new_api_key
from kapell.backends.kubernetes.tenants import (
    TENANT_LABEL,
    key_secret,
    keys_in_secret,
    parse_tenant,
    secret_name,
)

K8S_VERSION = "1.34.0"


def test_the_secret_is_valid_owned_by_the_tenant_and_holds_no_key() -> None:
    plain, key = new_api_key("team", "t", ["m"], "2026-01-01T00:00:00Z")
    secret = key_secret(key, "uid-1").to_dict()
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    meta = secret["metadata"]
    assert (meta["name"], meta["namespace"]) == (secret_name("t"), "team")
    assert meta["labels"][TENANT_LABEL] == "t"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert plain not in base64.b64decode(secret["data"][key.id]).decode()
    assert keys_in_secret(secret) == [key]


def test_an_entry_that_is_not_a_key_record_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, key = new_api_key("team", "t", [], "")
    secret = key_secret(key, "uid-1").to_dict()
    secret["data"]["junk"] = base64.b64encode(b"{not json").decode()
    with caplog.at_level(logging.WARNING):
        assert keys_in_secret(secret) == [key]
    assert "entry junk is not a key record" in caplog.text


def test_a_tenant_kapell_refuses_is_ignored_not_fatal() -> None:
    raw = {"metadata": {"name": "t", "namespace": "n"}, "spec": {"requestsPerMinute": 5}}
    tenant = parse_tenant(raw)
    assert tenant is not None and tenant.spec.requests_per_minute == 5
    assert parse_tenant({**raw, "spec": {"requestsPerMinute": -1}}) is None
