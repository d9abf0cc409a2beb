"""The Tenant kind and API key records: YAML errors with lines, fresh keys, the shared check."""

from __future__ import annotations

import pytest

from kapell.api import Tenant
from kapell.api.errors import SpecError
from kapell.api.loader import load_text
from kapell.api.tenant import KEY_PREFIX, hash_api_key, key_id, key_problem, new_api_key

TEXT = """\
apiVersion: kapell.dev/v1alpha1
kind: Tenant
metadata: {name: team-a}
spec:
  models: [chat, embed]
  requestsPerMinute: 60
"""


def _tenant(text: str = TEXT) -> Tenant:
    [tenant] = load_text(text, "t.yaml")
    assert isinstance(tenant, Tenant)
    return tenant


def test_a_tenant_loads_with_unlimited_defaults() -> None:
    spec = _tenant().spec
    assert spec.models == ["chat", "embed"]
    assert (spec.requests_per_minute, spec.tokens_per_minute) == (60, 0)


@pytest.mark.parametrize(
    ("good", "bad", "where"),
    [
        ("requestsPerMinute: 60", "requestsPerMinute: -1", "t.yaml:6: spec.requestsPerMinute:"),
        ("models: [chat, embed]", "models: [Chat, embed]", "t.yaml:5: spec.models[0]: invalid"),
    ],
)
def test_bad_fields_are_one_line_with_file_and_line(good: str, bad: str, where: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_text(TEXT.replace(good, bad), "t.yaml")
    assert str(caught.value.problems[0]).startswith(where)


def test_new_keys_are_random_and_only_their_hash_is_recorded() -> None:
    plain, record = new_api_key("default", "team-a", ["embed", "chat", "chat"], "now")
    other, _ = new_api_key("default", "team-a", [], "now")
    assert plain.startswith(KEY_PREFIX) and len(plain) > 50 and plain != other
    assert record.sha256 == hash_api_key(plain) and record.id == key_id(record.sha256)
    assert plain not in record.model_dump_json()
    assert record.models == ["chat", "embed"]


def test_key_problem_needs_the_tenant_and_its_models() -> None:
    _, record = new_api_key("default", "team-a", ["chat"], "now")
    _, outside = new_api_key("default", "team-a", ["chat", "other"], "now")
    assert "tenant 'team-a' not found" in str(key_problem(None, record))
    assert key_problem(_tenant(), record) is None
    assert "--models other: not among tenant 'team-a'" in str(key_problem(_tenant(), outside))
    open_tenant = _tenant(TEXT.replace("  models: [chat, embed]\n", ""))
    assert key_problem(open_tenant, outside) is None  # a tenant without a list allows any
