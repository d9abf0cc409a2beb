"""Hostile and invalid requests, sent to a real gateway process and a real sim engine process.

Both answer with OpenAI-shaped 400s carrying a code, agree on the checks they both make, and
log no traceback for anything a client sent.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kapell.net import free_port, wait_http

from .sim_procs import GATEWAY_SCRIPT, sim_engine_args

MODEL = "llama"
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


class Servers:
    """A sim engine and a gateway in front of it, each a process logging to a file."""

    def __init__(self, engine: str, gateway: str, logs: list[Path]) -> None:
        self.engine = engine
        self.gateway = gateway
        self.logs = logs

    def logged(self) -> str:
        return "".join(path.read_text() for path in self.logs)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    logs_dir = tmp_path_factory.mktemp("logs")
    engine_port, gateway_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    commands = {
        "engine": sim_engine_args("h100-llama3-8b", MODEL, engine_port, "--cold-start-s", "0"),
        "gateway": [sys.executable, "-c", GATEWAY_SCRIPT, MODEL, str(gateway_port), engine],
    }
    logs = [logs_dir / f"{name}.log" for name in commands]
    procs = []
    for (_, command), log in zip(commands.items(), logs, strict=True):
        with log.open("w") as out:
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
    try:
        wait_http(engine + "/health")
        wait_http(gateway + "/v1/models")
        yield Servers(engine, gateway, logs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def _valid_fields(path: str) -> str:
    if path.endswith("/chat/completions"):
        return '"messages": [{"role": "user", "content": "hi"}]'
    return '"prompt": "hi"' if path.endswith("/completions") else '"input": "hi"'


def _nested_bodies(path: str) -> dict[str, bytes]:
    """About 2 KB each: a thousand nested lists where the prompt belongs, a thousand nested
    objects in an extra field, and a hundred nested objects (deeper than any real request)."""
    field = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}.get(path, "input")
    lists = f'{{"model": "{MODEL}", "{field}": ' + "[" * 1000 + "]" * 1000 + "}"
    objects = f'{{"model": "{MODEL}", {_valid_fields(path)}, "x": '
    return {
        "lists-1000": lists.encode(),
        "objects-1000": (objects + '{"a":' * 1000 + "1" + "}" * 1000 + "}").encode(),
        "objects-100": (objects + '{"a":' * 100 + "1" + "}" * 100 + "}").encode(),
    }


def test_deeply_nested_json_is_a_400_not_a_500_and_logs_no_traceback(servers: Servers) -> None:
    for path in PATHS:
        for name, body in _nested_bodies(path).items():
            targets = (
                [servers.gateway] if name == "objects-100" else [servers.gateway, servers.engine]
            )
            for base in targets:
                response = _post(base + path, body)
                where = f"{base}{path} {name}"
                assert response.status_code == 400, f"{where}: {response.text[:300]}"
                error = _error(response)
                assert "nested too deeply" in error["message"], where
                assert (error["type"], error["code"]) == (
                    "invalid_request_error",
                    "invalid_request",
                )
    # Both still serve, and neither logged a traceback for what a client sent.
    for base in (servers.gateway, servers.engine):
        assert _post(
            base + PATHS[1], b'{"model": "llama", "prompt": "a b", "max_tokens": 2}'
        ).is_success
    assert "Traceback" not in servers.logged()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ],
)
def test_gateway_and_engine_refuse_max_tokens_below_1_alike(
    servers: Servers, fields: dict[str, int], param: str
) -> None:
    errors = []
    for base in (servers.gateway, servers.engine):
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], **fields
            )
        errors.append(caught.value.body)
    gateway_error, engine_error = errors
    assert gateway_error == engine_error
    assert gateway_error == {
        "message": f"{param}: Input should be greater than or equal to 1",
        "type": "invalid_request_error",
        "param": param,
        "code": f"bad_{param}",
    }


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_non_finite_sampling_numbers_are_reported_as_such(
    servers: Servers, field: str, value: str
) -> None:
    body = f'{{"model": "{MODEL}", "prompt": "hi", "max_tokens": 2, "{field}": {value}}}'
    for base in (servers.gateway, servers.engine):
        response = _post(base + "/v1/completions", body.encode())
        assert response.status_code == 400, response.text
        assert _error(response) == {
            "message": f"{field}: Input should be a finite number",
            "type": "invalid_request_error",
            "param": field,
            "code": f"bad_{field}",
        }


def test_engine_errors_carry_codes_in_the_gateway_scheme(servers: Servers) -> None:
    long_prompt = " ".join(["word"] * 9000)
    cases = [
        ("POST", "/v1/completions", b"{not json", 400, "invalid_request"),
        ("POST", "/v1/completions", b"[1, 2]", 400, "invalid_request"),
        ("POST", "/v1/completions", b'{"model": "llama"}', 400, "bad_prompt"),
        ("POST", "/v1/completions", b'{"model": "llama", "prompt": ""}', 400, "bad_prompt"),
        ("POST", "/v1/completions", b'{"model": "llama", "prompt": "x", "n": 2}', 400, "bad_n"),
        ("POST", "/v1/completions",
         f'{{"model": "llama", "prompt": "{long_prompt}"}}'.encode(), 400,
         "context_length_exceeded"),
        ("POST", "/v1/completions", b'{"model": "other", "prompt": "x"}', 404, "model_not_found"),
        ("POST", "/v1/embeddings", b'{"model": "llama", "input": "x"}', 400,
         "embeddings_unsupported"),
        ("GET", "/v1/nowhere", b"", 404, "not_found"),
        ("GET", "/v1/completions", b"", 405, "method_not_allowed"),
    ]  # fmt: skip
    for method, path, body, status, code in cases:
        response = httpx.request(
            method,
            servers.engine + path,
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == status, (path, body[:60], response.text)
        error = _error(response)
        assert error["code"] == code, (path, body[:60], error)
        assert error["type"] and error["message"]
        if method == "POST" and status == 400:  # what the engine answers reaches clients as is
            via_gateway = _post(servers.gateway + path, body)
            assert via_gateway.status_code == 400
            assert _error(via_gateway)["code"] == code, (path, body[:60], _error(via_gateway))
