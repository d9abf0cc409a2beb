"""Hypothesis against the gateway's OpenAPI paths: no body, however odd, gets a 500."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Stack
from kapell.api.prompt import Prompt, PromptVersion

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
fields = st.sampled_from(["model", "messages", "prompt", "input", "stream", "max_tokens",
                          "max_completion_tokens", "stream_options", "role", "content",
                          "instructions", "score", "response_id", "version"])  # fmt: skip
prompt_refs = st.fixed_dictionaries(
    {"id": st.sampled_from(["greet", "nope"])},
    optional={"version": json_values,
              "variables": st.dictionaries(st.sampled_from(["name", "x"]), json_values)},
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(fields, json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {"model": st.sampled_from(["tiny", "other", ""]),
         "messages": st.lists(st.fixed_dictionaries({"role": st.text(max_size=5),
                                                     "content": json_values}), max_size=3)},
        optional={"stream": json_values, "max_tokens": json_values,
                  "prompt": json_values | prompt_refs, "input": json_values},
    ).map(lambda d: json.dumps(d).encode()),
)  # fmt: skip


def test_no_request_body_makes_the_gateway_fail(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    greet = Prompt.model_validate(
        {"metadata": {"name": "greet"}, "spec": {"model": "tiny", "template": "Hi {{name}}"}}
    )
    version = PromptVersion.of(greet.spec)
    stack.loop_thread.call(lambda: stack.gateway.prompts.update([(greet, [version])]))
    spec = httpx.get(stack.url + "/openapi.json").json()
    paths = [p for p, ops in spec["paths"].items() if "post" in ops]
    assert len(paths) == 5

    with httpx.Client(base_url=stack.url, timeout=10) as http:

        @settings(max_examples=100, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(path=st.sampled_from(paths), body=bodies)
        def check(path: str, body: bytes) -> None:
            reply = http.post(path, content=body, headers={"content-type": "application/json"})
            assert reply.status_code < 500, (reply.status_code, reply.text)
            if reply.status_code >= 400:
                assert set(reply.json()["error"]) >= {"message", "type", "code"}

        check()
