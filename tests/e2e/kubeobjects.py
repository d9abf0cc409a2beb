"""Small helpers the e2e tests share: polling with a deadline, pods that use DRA claims, and the
devices the fake driver published."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from lightkube import Client
from lightkube.resources.resource_v1 import ResourceSlice

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


def published_devices(kube: Client) -> dict[tuple[str, str], dict[str, Any]]:
    """(pool, device name) -> the device's attributes as plain values, from every slice."""
    devices = {}
    for slice_ in kube.list(ResourceSlice):
        spec = slice_.to_dict()["spec"]
        for device in spec.get("devices", []):
            attributes = {
                name: next(iter(value.values()))  # {"string": "gpu"} -> "gpu"
                for name, value in device.get("attributes", {}).items()
            }
            devices[(spec["pool"]["name"], device["name"])] = {
                "node": spec["nodeName"],
                **attributes,
            }
    return devices


def busybox_pod(name: str, claims: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A pod whose one container uses every claim in ``claims`` (claim name -> source), for a
    kwok node (serving nodes run only the engine image)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"type": "kwok"},
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
