"""The access log: one line per request to a model, in a file per model.

Lines are logfmt (``key=value`` separated by spaces, values with a space, quote or ``=``
JSON-quoted), so they read well in ``tail -f`` and split with one line of code::

    time=2026-05-01T12:00:00.123Z model=chat status=200 latency_ms=153.2 ttft_ms=20.1
    prompt_tokens=5 generated_tokens=12 replica=chat-4c1e9-3 tenant=anonymous
    path=/v1/chat/completions stream=true

(one line in the file). ``time`` is when the request arrived (UTC), ``latency_ms`` until its
last byte was sent, ``ttft_ms`` until the first byte of the answer (``-`` if none came), ``replica``
the replica that answered (``-`` if none did), ``status`` the HTTP status the client got (499:
it went away first). Requests refused before a model is known (malformed JSON, a bad API key,
an unknown model) belong to no model and are only counted on ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

FILE_NAME = "access.log"
logger = logging.getLogger(__name__)
_PLAIN = re.compile(r"[^\s\"=]+")


@dataclass(frozen=True)
class AccessRecord:
    """What the gateway knows about one finished request."""

    arrived: float
    """Wall-clock seconds since the epoch."""
    model: str
    path: str
    status: int
    latency_s: float
    ttft_s: float | None
    prompt_tokens: int
    generated_tokens: int
    replica: str | None
    tenant: str
    stream: bool


def format_record(record: AccessRecord) -> str:
    """One logfmt line, without the newline."""
    at = datetime.fromtimestamp(record.arrived, UTC)
    fields: list[tuple[str, str]] = [
        ("time", at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"),
        ("model", record.model),
        ("status", str(record.status)),
        ("latency_ms", f"{record.latency_s * 1e3:.1f}"),
        ("ttft_ms", "-" if record.ttft_s is None else f"{record.ttft_s * 1e3:.1f}"),
        ("prompt_tokens", str(record.prompt_tokens)),
        ("generated_tokens", str(record.generated_tokens)),
        ("replica", record.replica or "-"),
        ("tenant", record.tenant),
        ("path", record.path),
        ("stream", "true" if record.stream else "false"),
    ]
    return " ".join(f"{key}={_quote(value)}" for key, value in fields)


def parse_line(line: str) -> dict[str, str]:
    """The fields of one access log line (the inverse of ``format_record``)."""
    fields: dict[str, str] = {}
    decoder = json.JSONDecoder()
    position, end = 0, len(line)
    while position < end:
        if line[position] == " ":
            position += 1
            continue
        equals = line.index("=", position)
        key = line[position:equals]
        position = equals + 1
        if line.startswith('"', position):
            value, position = decoder.raw_decode(line, position)
        else:
            space = line.find(" ", position)
            space = end if space < 0 else space
            value, position = line[position:space], space
        fields[key] = str(value)
    return fields


def _quote(value: str) -> str:
    return value if _PLAIN.fullmatch(value) else json.dumps(value)


class AccessLog:
    """Appends records to ``<directory>/<model>/access.log``, one line each, as they come.

    Files are opened on a model's first request and kept open, line-buffered (a line is in the
    file when the request ends). A failed write is logged once per model and then dropped: the
    access log must never fail a request.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files: dict[str, IO[str]] = {}
        self._failed: set[str] = set()

    def path(self, model: str) -> Path:
        return self._directory / model / FILE_NAME

    def __call__(self, record: AccessRecord) -> None:
        model = record.model
        if model in self._failed:
            return
        try:
            file = self._files.get(model)
            if file is None:
                path = self.path(model)
                path.parent.mkdir(parents=True, exist_ok=True)
                file = self._files[model] = path.open("a", buffering=1, encoding="utf-8")
            file.write(format_record(record) + "\n")
        except OSError as exc:
            self._failed.add(model)
            logger.warning("access log of model %s disabled: %s", model, exc)

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()
