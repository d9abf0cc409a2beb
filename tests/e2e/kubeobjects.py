"""Small helpers the e2e tests share: polling with a deadline, and a pod that uses DRA claims."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

WAIT_S = 60.0

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something other than None; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def busybox_pod(name: str, claims: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A pod whose one container uses every claim in ``claims`` (claim name -> source)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"claims": [{"name": c} for c in claims]},
                }
            ],
            "resourceClaims": [{"name": c, **source} for c, source in claims.items()],
        },
    }
