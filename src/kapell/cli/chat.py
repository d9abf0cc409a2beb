"""``kapell chat MODEL``: a conversation with a served model in the terminal.

Each line read is a user turn, sent with the whole conversation so far to the gateway's
``/v1/chat/completions`` and answered as it streams. ``/bye`` or end of input (Ctrl-D) ends it,
``/clear`` forgets the conversation; Ctrl-C stops a reply mid-way (and leaves it out of the
conversation). Lines may come from a pipe too, for scripts.

It speaks HTTP with the standard library, like the rest of the CLI: no client package to
import before the first prompt appears.
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.parse
from typing import Annotated, Any

import typer

from kapell.api.errors import KapellError
from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call

READ_TIMEOUT_S = 330.0
"""Longer than the gateway holds a request for a model scaling from zero (300 s)."""
HELP = "/bye or Ctrl-D: leave; /clear: forget the conversation; Ctrl-C: stop a reply"


def chat(
    model: Annotated[str, typer.Argument(help="Model name (as in `kapell get`).")],
    system: Annotated[
        str | None, typer.Option("--system", help="A system message to start with.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Longest reply, in tokens.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", min=0.0, max=2.0, help="Sampling.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Gateway base URL; default: the running instance's."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="KAPELL_API_KEY", help="Sent as a bearer token."),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Chat with a model in the terminal: type a message, read the streamed reply."""
    base = (url or str(call(state_dir, "GET", "/status")["gateway_url"])).rstrip("/")
    base = base.removesuffix("/v1")
    gateway = _Gateway(base, api_key)
    served = gateway.models()
    if model not in served:
        known = ", ".join(served) or "none"
        raise KapellError(f"model {model!r} is not served at {base} (served: {known})")
    interactive = sys.stdin.isatty()
    opening = [{"role": "system", "content": system}] if system else []
    history: list[dict[str, str]] = list(opening)
    if interactive:
        typer.echo(f"chatting with {model} at {base}/v1 ({HELP})")
    failed = False
    while True:
        try:
            line = input(">>> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                typer.echo("")
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            break
        if text == "/clear":
            history = list(opening)
            typer.echo("(conversation cleared)", err=True)
            continue
        if text.startswith("/") and " " not in text:
            typer.echo(f"unknown command {text}; {HELP}", err=True)
            continue
        history.append({"role": "user", "content": line})
        payload: dict[str, Any] = {
            "model": model,
            "messages": history,
            "stream": True,
            "stream_options": {"include_usage": True},  # exact token counts in the access log
        }
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        try:
            reply = gateway.stream_chat(payload)
        except KeyboardInterrupt:
            typer.echo("\n(reply stopped)", err=True)
            history.pop()
            continue
        except KapellError as exc:
            typer.echo(f"error: {exc}", err=True)
            history.pop()
            failed = True
            continue
        history.append({"role": "assistant", "content": reply})
    if failed:
        raise typer.Exit(1)


class _Gateway:
    """The two calls chat needs, over ``http.client`` (one connection per call)."""

    def __init__(self, base: str, api_key: str | None) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KapellError(f"not an http(s) URL: {base!r}")
        self._base = base
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def _connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=READ_TIMEOUT_S)

    def _send(
        self, method: str, path: str, body: Any = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        connection = self._connection()
        data = None if body is None else json.dumps(body).encode()
        try:
            connection.request(method, self._prefix + path, body=data, headers=self._headers)
            response = connection.getresponse()
        except OSError as exc:
            connection.close()
            raise KapellError(f"cannot reach the gateway at {self._base}: {exc}") from None
        if response.status != 200:
            message = _error_message(response.read()) or response.reason
            connection.close()
            raise KapellError(f"{response.status}: {message}")
        return connection, response

    def models(self) -> list[str]:
        connection, response = self._send("GET", "/v1/models")
        try:
            return [str(m["id"]) for m in json.loads(response.read())["data"]]
        finally:
            connection.close()

    def stream_chat(self, payload: dict[str, Any]) -> str:
        """Print the reply as it streams; return its text."""
        connection, response = self._send("POST", "/v1/chat/completions", payload)
        parts: list[str] = []
        try:
            for raw in response:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise KapellError(_error_message(data.encode()) or "the reply failed")
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                        parts.append(piece)
        except (OSError, ValueError) as exc:
            raise KapellError(f"the reply broke off: {exc}") from None
        finally:
            connection.close()
            if parts:
                sys.stdout.write("\n")
                sys.stdout.flush()
        return "".join(parts)


def _error_message(body: bytes) -> str | None:
    """The message of an OpenAI-shaped error body, if it is one."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if isinstance(error, dict):
        return str(error.get("message"))
    return None if error is None else str(error)
