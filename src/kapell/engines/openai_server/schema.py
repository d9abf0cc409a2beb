"""Request bodies of the OpenAI API, validated, and OpenAI-format error bodies.

Unknown fields are ignored (clients send many optional ones); fields kapell cannot honour
(``n > 1``, ``logprobs``, ``echo``, ``best_of``) are rejected with a 400 that names them, rather
than silently producing something else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kapell.engines.openai_server.protocol import ChatMessage


class ApiError(Exception):
    """An error the server answers in OpenAI's format: ``{"error": {...}}``.

    ``code`` follows kapell's gateway: ``bad_<field>`` for a request field at fault,
    ``invalid_request`` for a body that is not a JSON object, and a name for everything else
    (``model_not_found``, ``context_length_exceeded``, ``internal_error``...).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Sampling(_Request):
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage_in_stream(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None

    def flattened(self) -> ChatMessage:
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        return ChatMessage(role=self.role, content=text)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[_Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: Literal[False] | None = None

    def chat_messages(self) -> list[ChatMessage]:
        return [m.flattened() for m in self.messages]

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = str | list[str] | Annotated[list[int], Field(min_length=1)] | list[list[int]]


class CompletionRequest(_Sampling):
    prompt: Prompt
    echo: Literal[False] = False
    logprobs: None = None
    best_of: Literal[1] | None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value

    def token_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Request):
    input: str | Annotated[list[str], Field(min_length=1)] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: None = None


R = TypeVar("R", bound=BaseModel)


def parse_request(model: type[R], body: bytes) -> R:
    """Validate ``body`` as ``model``; any problem becomes a 400 naming the offending field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = first["loc"]
        if first["type"] == "json_invalid":
            if "recursion limit" in first["msg"]:
                message = "request body is nested too deeply"
            else:
                message = f"request body is not valid JSON: {first['msg']}"
            raise ApiError(400, message, code="invalid_request") from None
        if not loc:
            raise ApiError(
                400, "request body must be a JSON object", code="invalid_request"
            ) from None
        where = ".".join(str(p) for p in loc)
        raise ApiError(400, f"{where}: {first['msg']}", param=where, code=f"bad_{loc[0]}") from None
