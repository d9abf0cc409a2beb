"""The one exception tree of kapell.

User errors (bad YAML, a missing file, a port in use) derive from ``KapellError`` and are
printed by the CLI as one line without a traceback. Anything else is a programming error
and is allowed to crash loudly.

    KapellError
    ├── SpecError            a resource file is invalid; carries every problem found
    ├── NotFoundError        a named resource or file does not exist
    ├── ConflictError        the request contradicts stored state
    └── BackendError         the platform could not do what was asked (process, port, API)
        ├── NotRunningError  no kapell instance answers on the admin address
        └── UnschedulableError  no node has room for a replica
"""

from __future__ import annotations

from dataclasses import dataclass


class KapellError(Exception):
    """Base of every error a user can cause and fix."""


@dataclass(frozen=True)
class Problem:
    """One problem in a resource file, printable as ``FILE:LINE: field.path: message``."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(KapellError):
    """A resource file is invalid. ``problems`` lists every problem, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NotFoundError(KapellError):
    """A named resource or file does not exist."""


class ConflictError(KapellError):
    """The request contradicts stored state."""


class BackendError(KapellError):
    """The platform could not carry out a request."""


class NotRunningError(BackendError):
    """No kapell instance answers on the admin address."""


class UnschedulableError(BackendError):
    """No node has room for a replica; the message says what is missing."""
