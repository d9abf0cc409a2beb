"""Finding and calling the running kapell instance's admin API (stdlib HTTP, no extra deps)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kapell.api.errors import KapellError, NotFoundError, NotRunningError

INSTANCE_FILE = "instance.json"
DEFAULT_STATE_DIR = Path(".kapell")


def instance_info(state_dir: Path) -> dict[str, Any]:
    """What ``kapell up`` wrote about itself: admin and gateway URLs, pid."""
    path = state_dir / INSTANCE_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise NotRunningError(
            f"no kapell instance found in {state_dir}; start one with `kapell up -f FILE`"
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
            f"no kapell instance answers at {base} ({reason}); start one with `kapell up -f FILE`"
        ) from None
