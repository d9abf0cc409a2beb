"""One OpenTelemetry span per proxied request, exported over OTLP/HTTP (protobuf).

Attributes follow OpenInference's semantic conventions (``openinference.span.kind``,
``llm.model_name``, ``llm.token_count.*``, ``prompt.id``, ``llm.prompt_template.version``,
``input.value`` / ``output.value``), so Arize Phoenix or any OTLP collector shows the model,
the prompt and its version, latencies and token counts. Request and response content is
recorded only when asked for (``capture_content``): prompts are user data.

A span is built after the request finished, with its real start and end times, rather than
kept open across the proxy's awaits: the hot path pays nothing while the request is served.
A ``traceparent`` header from the caller makes the span a child of the caller's trace.
The SDK is an optional extra (``kapell[otel]``), imported only when tracing is on; spans are
batched and sent from the SDK's own thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kapell.api.errors import KapellError

TRACES_PATH = "/v1/traces"
CONTENT_LIMIT_BYTES = 64 * 1024
"""Most request or response bytes recorded in a span (with ``capture_content``)."""
_CONTENT_FIELDS = ("messages", "prompt", "input")
_SPAN_NAMES = {
    "/v1/chat/completions": ("ChatCompletion", "LLM"),
    "/v1/completions": ("Completion", "LLM"),
    "/v1/embeddings": ("CreateEmbeddings", "EMBEDDING"),
}


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector given by its base URL (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is), or of one given with the path already."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


@dataclass
class FinishedRequest:
    """What a span records of one request (times in ns since the epoch)."""

    path: str
    model: str
    tenant: str
    status: int
    stream: bool
    start_ns: int
    end_ns: int
    ttft_s: float | None
    prompt_tokens: int
    completion_tokens: int
    replica: str | None
    payload: dict[str, Any]
    prompt_id: str
    prompt_version: str
    request_body: bytes
    response_body: bytes | None
    traceparent: str | None


def stream_text(body: bytes) -> str:
    """The generated text inside a server-sent event stream of OpenAI chunks."""
    parts: list[str] = []
    for line in body.split(b"\n"):
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            continue  # the limit cut this event
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            parts.append(text if isinstance(text, str) else choice.get("text") or "")
    return "".join(parts)


def attributes(request: FinishedRequest, capture_content: bool) -> dict[str, Any]:
    """The span's attributes: OpenInference names, then kapell's own."""
    _, kind = _SPAN_NAMES.get(request.path, ("", "LLM"))
    total = request.prompt_tokens + request.completion_tokens
    params = {k: v for k, v in request.payload.items() if k not in _CONTENT_FIELDS}
    attrs: dict[str, Any] = {
        "openinference.span.kind": kind,
        "llm.model_name": request.model,
        "llm.provider": "kapell",
        "llm.invocation_parameters": json.dumps(params, default=str),
        "llm.token_count.prompt": request.prompt_tokens,
        "llm.token_count.completion": request.completion_tokens,
        "llm.token_count.total": total,
        "http.route": request.path,
        "http.response.status_code": request.status,
        "kapell.tenant": request.tenant,
        "kapell.stream": request.stream,
    }
    if request.prompt_id:
        attrs["prompt.id"] = request.prompt_id
    if request.prompt_version:
        attrs["llm.prompt_template.version"] = request.prompt_version
    if request.ttft_s is not None:
        attrs["kapell.time_to_first_token_s"] = request.ttft_s
    if request.replica is not None:
        attrs["kapell.replica"] = request.replica
    if capture_content:
        attrs["input.value"] = request.request_body[:CONTENT_LIMIT_BYTES].decode(errors="replace")
        attrs["input.mime_type"] = "application/json"
        body = request.response_body or b""
        if request.stream:
            attrs["output.value"] = stream_text(body)
            attrs["output.mime_type"] = "text/plain"
        else:
            attrs["output.value"] = body[:CONTENT_LIMIT_BYTES].decode(errors="replace")
            attrs["output.mime_type"] = "application/json"
        variables = request.payload.get("prompt", {})
        if isinstance(variables, dict) and isinstance(variables.get("variables"), dict):
            attrs["llm.prompt_template.variables"] = json.dumps(variables["variables"])
    return attrs


class RequestTracer:
    """Sends one span per finished request to an OTLP/HTTP collector."""

    def __init__(
        self,
        endpoint: str,
        capture_content: bool = False,
        service_name: str = "kapell-gateway",
        schedule_delay_ms: int = 1000,
    ) -> None:
        """``endpoint``: the collector's base URL (``http://host:4318``) or traces URL."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            raise KapellError(
                "tracing needs the OpenTelemetry SDK and OTLP exporter: "
                "pip install 'kapell[otel]' (or unset --otlp-endpoint / "
                "OTEL_EXPORTER_OTLP_ENDPOINT)"
            ) from None
        self.capture_content = capture_content
        self.url = traces_url(endpoint)
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=self.url), schedule_delay_millis=schedule_delay_ms
            )
        )
        self._tracer = self._provider.get_tracer("kapell.gateway")
        self._propagator = TraceContextTextMapPropagator()

    def record(self, request: FinishedRequest) -> None:
        """Queue the span of one finished request for export."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        name, _ = _SPAN_NAMES.get(request.path, (request.path, "LLM"))
        parent = (
            self._propagator.extract({"traceparent": request.traceparent})
            if request.traceparent
            else None
        )
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes(request, self.capture_content),
            start_time=request.start_ns,
        )
        if request.status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {request.status}"))
        span.end(end_time=request.end_ns)

    def close(self) -> None:
        """Send the spans still queued, then stop the exporter."""
        self._provider.shutdown()
