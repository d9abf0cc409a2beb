"""The gateway's OpenAPI description: the OpenAI subset it serves, and its error shape.

Only the fields the gateway itself reads are constrained; the rest pass through to the
engine (``additionalProperties: true``).
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_COMMON = {
    "model": {"type": "string", "minLength": 1},
    "stream": {"type": "boolean"},
    "max_tokens": {"type": "integer", "minimum": 0},
}

_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/chat/completions": (
        "messages",
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
            },
        },
    ),
    "/v1/completions": ("prompt", {"oneOf": [{"type": "string"}, {"type": "array"}]}),
    "/v1/embeddings": ("input", {"oneOf": [{"type": "string"}, {"type": "array"}]}),
}


_PROMPT = {
    "type": "object",
    "description": "A Prompt's version to render and send to its Model (kapell extension on "
    "chat completions; 'messages' may then be empty)",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "version": {"type": ["string", "integer"]},
        "variables": {"type": "object"},
    },
}

_RESPONSES_BODY = {
    "type": "object",
    "description": "OpenAI's Responses API, without streaming or tools: 'model' or 'prompt', "
    "and 'input' (a string or messages), 'instructions', 'max_output_tokens'",
    "properties": {
        "model": {"type": "string"},
        "prompt": _PROMPT,
        "input": {"oneOf": [{"type": "string"}, {"type": "array"}]},
        "instructions": {"type": "string"},
        "max_output_tokens": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": True,
}

_FEEDBACK_BODY = {
    "type": "object",
    "required": ["score"],
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "response_id": {"type": "string"},
        "version": {"type": "integer"},
    },
}


def _post(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": _responses(),
        }
    }


def _responses() -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "200": {"description": "The engine's answer (JSON, or server-sent events when streaming)"},
        **{
            code: {"description": why, **error}
            for code, why in (
                ("400", "malformed request"),
                ("401", "missing or unknown API key"),
                ("403", "the key may not use this model"),
                ("404", "unknown model, prompt or prompt version"),
                ("413", "body too large"),
                ("429", "quota used up or model queue full (see Retry-After)"),
                ("502", "every replica tried failed"),
                ("503", "no ready replica in time (see Retry-After)"),
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document served at ``/openapi.json``."""
    paths: dict[str, Any] = {}
    for path, (field, schema) in _REQUESTS.items():
        extension = {"prompt": _PROMPT} if path == "/v1/chat/completions" else {}
        body = {
            "type": "object",
            "required": ["model", field],
            "properties": {**_COMMON, field: schema, **extension},
            "additionalProperties": True,
        }
        paths[path] = _post(body)
    paths["/v1/responses"] = _post(_RESPONSES_BODY)
    paths["/v1/prompts/{name}/feedback"] = _post(_FEEDBACK_BODY)
    paths["/v1/models"] = {
        "get": {"responses": {"200": {"description": "models visible to the key"}}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "kapell gateway", "version": "v1"},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
