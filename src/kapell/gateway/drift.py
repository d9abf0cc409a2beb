"""Drift windows fed by the gateway's finished requests, one per (model, prompt, version).

The proxy calls ``DriftMonitor.observe`` once per admitted request with what it already
measured (prompt text, generated tokens, latency, status); the statistics are
``policy.drift``'s. ``report`` is what ``/metrics`` (``observe.drift_metrics``) and the admin
API's ``/drift`` (``kapell drift``) show. Comparisons run when a window fills, on the event
loop: five histograms of ``window_requests`` values, well under a millisecond for a thousand.
"""

from __future__ import annotations

from typing import Any

from kapell.policy.drift import (
    Comparison,
    DriftSettings,
    DriftWindows,
    RequestSample,
    outcome_of,
    text_script,
)

DriftKey = tuple[str, str, str]
"""(model, prompt id, prompt version); the prompt parts are empty for a request without one."""


def prompt_key(payload: dict[str, Any]) -> tuple[str, str]:
    """``(id, version)`` of the request's ``prompt`` object (OpenAI Responses style), or empty
    strings when it has none."""
    prompt = payload.get("prompt")
    if not isinstance(prompt, dict) or not isinstance(prompt.get("id"), str):
        return "", ""
    version = prompt.get("version")
    return prompt["id"], "" if version is None else str(version)


def _feature(comparison: Comparison) -> dict[str, Any]:
    c = comparison
    return {
        "feature": c.feature, "direction": c.direction, "statistic": c.statistic,
        "threshold": c.threshold, "bins": c.bins, "shift": c.shift, "shiftFloor": c.shift_floor,
        "drifting": c.drifting,
    }  # fmt: skip


class DriftMonitor:
    """The drift windows of every traffic key seen (up to ``settings.max_keys``)."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self._windows: dict[DriftKey, DriftWindows] = {}
        self.untracked = 0
        """Requests not tracked because ``max_keys`` keys were tracked already."""

    def observe(
        self,
        key: DriftKey,
        prompt_text: str,
        output_tokens: int,
        latency_s: float,
        status: int,
        arrived_s: float = 0.0,
    ) -> None:
        """Add one finished request (it arrived at ``arrived_s``, any clock) to its key's
        windows."""
        windows = self._windows.get(key)
        if windows is None:
            if len(self._windows) >= self.settings.max_keys:
                self.untracked += 1
                return
            windows = self._windows[key] = DriftWindows(self.settings)
        sample = RequestSample(
            len(prompt_text),
            text_script(prompt_text),
            output_tokens,
            latency_s,
            outcome_of(status),
            arrived_s,
        )
        windows.add(sample)

    def report(self) -> dict[str, Any]:
        """Settings, then per key: window sizes, the last comparison and whether it drifts
        (``drifting`` is None until a first current window has been compared)."""
        s = self.settings
        keys = []
        for (model, prompt, version), w in sorted(self._windows.items()):
            keys.append({
                "model": model, "prompt": prompt, "version": version,
                "referenceRequests": len(w.reference), "currentRequests": len(w.current),
                "windowsCompared": w.windows_compared,
                "drifting": w.drifting if w.windows_compared else None,
                "features": [_feature(c) for c in w.last],
            })  # fmt: skip
        return {
            "settings": {
                "warmupRequests": s.warmup_requests,
                "referenceRequests": s.reference_requests,
                "windowRequests": s.window_requests,
                "falseAlarmRate": s.false_alarm_rate,
                "bins": s.bins,
                "latencyShift": s.latency_shift,
            },
            "untrackedRequests": self.untracked,
            "keys": keys,
        }
