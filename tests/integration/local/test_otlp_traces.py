"""Traces of gateway requests reach a real OTLP/HTTP receiver with OpenInference attributes.

The receiver is a small HTTP server in the test that decodes what it is sent with
opentelemetry-proto (the collector's wire format), not an exporter mock: `kapell up
--otlp-endpoint` exports over a real socket, as it would to Arize Phoenix or a collector.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from tests.integration.local.conftest import Instance
from tests.integration.local.test_local_backend import SPEC as SIM_SPEC

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="needs the otel extra (opentelemetry-exporter-otlp-proto-http)",
)

SPEC = (
    SIM_SPEC.replace("SPEEDUP", "20").replace("REPLICAS", "1")
    + """\
---
apiVersion: kapell.dev/v1alpha1
kind: Prompt
metadata: {name: greeting}
spec:
  model: chat
  version: 3
  template: "Greet {{name}} warmly."
"""
)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def _value(any_value: Any) -> Any:
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


class Receiver(ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf exports on /v1/traces; keeps every span, decoded."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.paths.append(self.path)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start_ns": span.start_time_unix_nano, "end_ns": span.end_time_unix_nano,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "resource": resource,
                    })  # fmt: skip
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def wait_spans(receiver: Receiver, count: int, timeout_s: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while len(receiver.spans) < count:
        assert time.monotonic() < deadline, f"{len(receiver.spans)} of {count} spans arrived"
        time.sleep(0.1)
    return receiver.spans


def test_each_request_is_a_span_with_openinference_attributes(
    kapell_up: Callable[..., Instance], receiver: Receiver
) -> None:
    instance = kapell_up(SPEC, args=("--otlp-endpoint", receiver.url, "--trace-content"))
    client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(
        model="chat",
        max_tokens=12,
        messages=[{"role": "user", "content": "Say hello to Ada"}],
        extra_body={"prompt": {"id": "greeting", "version": "3", "variables": {"name": "Ada"}}},
        extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    stream = client.chat.completions.create(
        model="chat",
        max_tokens=8,
        stream=True,
        messages=[{"role": "user", "content": "count to three"}],
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    spans = wait_spans(receiver, 2)
    assert set(receiver.paths) == {"/v1/traces"}
    by_stream = {s["attributes"]["kapell.stream"]: s for s in spans}
    plain, streaming = by_stream[False], by_stream[True]

    attrs = plain["attributes"]
    assert plain["name"] == "ChatCompletion"
    assert plain["resource"]["service.name"] == "kapell-gateway"
    assert (plain["trace_id"], plain["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["llm.model_name"] == "chat"
    assert answer.usage is not None
    assert attrs["llm.token_count.prompt"] == answer.usage.prompt_tokens > 0
    assert attrs["llm.token_count.completion"] == answer.usage.completion_tokens == 12
    assert attrs["llm.token_count.total"] == answer.usage.total_tokens
    assert attrs["prompt.id"] == "greeting"
    assert attrs["llm.prompt_template.version"] == "3"
    assert json.loads(attrs["llm.prompt_template.variables"]) == {"name": "Ada"}
    assert json.loads(attrs["llm.invocation_parameters"])["max_tokens"] == 12
    assert attrs["http.response.status_code"] == 200
    assert "Say hello to Ada" in attrs["input.value"]
    content = json.loads(attrs["output.value"])["choices"][0]["message"]["content"]
    assert content == answer.choices[0].message.content
    assert plain["end_ns"] - plain["start_ns"] >= attrs["kapell.time_to_first_token_s"] * 1e9 > 0

    assert streaming["trace_id"] != TRACE_ID and streaming["parent_span_id"] == ""
    assert streaming["attributes"]["output.value"] == streamed != ""
    assert "prompt.id" not in streaming["attributes"]

    # The same request is tracked for drift under its prompt and version.
    drift = json.loads(instance.kapell("drift", "--json").stdout)
    keys = {(k["model"], k["prompt"], k["version"]): k for k in drift["keys"]}
    assert keys[("chat", "greeting", "3")]["referenceRequests"] == 1
    assert keys[("chat", "", "")]["referenceRequests"] == 1
