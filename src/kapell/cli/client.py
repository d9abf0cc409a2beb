"""Finding and calling the running kapell instance's admin API (stdlib HTTP, no extra deps).

The instance is found through its state directory, which is per user, not per working
directory, so every command finds it from anywhere: ``--state-dir`` if given, else
``$KAPELL_STATE_DIR``, else ``$XDG_STATE_HOME/kapell``, else ``~/.local/state/kapell``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from kapell.api.errors import KapellError, NotFoundError, NotRunningError

INSTANCE_FILE = "instance.json"
STATE_DIR_ENV = "KAPELL_STATE_DIR"


def user_state_dir() -> Path:
    """``$XDG_STATE_HOME/kapell``, or ``~/.local/state/kapell`` (the XDG default)."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "kapell"


DEFAULT_STATE_DIR = user_state_dir()


def state_dir_default() -> Path:
    """The state directory a command given no ``--state-dir`` uses."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar=STATE_DIR_ENV,
        help="Where the local instance keeps its state (per user by default, so any "
        "directory finds it).",
    ),
]


def instance_info(state_dir: Path) -> dict[str, Any]:
    """What ``kapell up`` wrote about itself: admin and gateway URLs, pid."""
    path = state_dir / INSTANCE_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise NotRunningError(
            f"no kapell instance found in {state_dir}; start one with `kapell up [-f FILE]`"
        ) from None
    return info


def admin_url(state_dir: Path) -> str:
    """``KAPELL_ADMIN`` if set, else the admin URL recorded in the state directory."""
    return os.environ.get("KAPELL_ADMIN") or str(instance_info(state_dir)["admin_url"])


def call(state_dir: Path, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
    """One admin API call; its JSON answer, or a one-line ``KapellError``."""
    base = admin_url(state_dir)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + "/admin/v1" + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise (NotFoundError if exc.code == 404 else KapellError)(str(message)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotRunningError(
            f"no kapell instance answers at {base} ({reason}); start one with `kapell up [-f FILE]`"
        ) from None
