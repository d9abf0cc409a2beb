"""The Prompt controller: rolls a new version out step by step, or back on its own.

Level-based on the Prompt's ``spec.version`` (the version wanted) and its status (the stable
version, the canary, its step and the test's evidence). The first version applied is stable
at once. A later one becomes the canary at ``steps[0]`` percent; each reconcile feeds
``policy.rollout.decide`` what every version did since the last one (the gateway's counters,
read through ``counts``) and applies its decision: hold, the next step, promotion (the canary
becomes stable) or rollback (the stable version takes all traffic back, and the canary is not
tried again). Applying the stable version's number while a canary runs aborts the canary.
The decision and its evidence are written into the status, which the gateway reads its
weights from.
"""

from __future__ import annotations

from collections.abc import Callable

from kapell.api.prompt import (
    Prompt,
    PromptStatus,
    RolloutEvidence,
    VersionCounts,
    VersionState,
    VersionWeight,
)
from kapell.api.units import parse_duration
from kapell.control.protocol import Store, condition
from kapell.policy import rollout

Counts = Callable[[str], dict[int, VersionCounts]]
"""Per version of the Prompt ``key``: what the gateway counted since it started."""


class PromptController:
    """``reconcile(key) -> requeue_after_s`` for Prompts."""

    def __init__(
        self, store: Store, counts: Counts, now_s: Callable[[], float], timestamp: Callable[[], str]
    ) -> None:
        """``now_s``: wall-clock seconds (a step's start survives a restart of kapell up)."""
        self._store = store
        self._counts = counts
        self._now_s = now_s
        self._timestamp = timestamp

    def reconcile(self, key: str) -> float | None:
        prompt = self._store.get(key)
        if not isinstance(prompt, Prompt):
            return None
        status, wanted = prompt.status, prompt.spec.version
        counts = self._counts(key)
        if status.stable_version == 0 or (
            status.phase == "RolledBack" and wanted == status.stable_version
        ):
            status = _stable(status, wanted, f"version {wanted} serves all traffic")
        elif status.canary_version not in (None, wanted):
            aborted = status.canary_version
            status = _stable(status, status.stable_version, f"canary {aborted} aborted")
        if status.canary_version is None and wanted not in (
            status.stable_version,
            *status.rolled_back,
        ):
            status = self._start(prompt, status, wanted, counts)
        elif status.canary_version is not None:
            status = self._step(prompt, status, counts)
        self._write(prompt, status)
        if status.canary_version is None:
            return None
        return min(max(parse_duration(prompt.spec.rollout.step_interval) / 10, 0.2), 5.0)

    def _start(
        self, prompt: Prompt, status: PromptStatus, canary: int, counts: dict[int, VersionCounts]
    ) -> PromptStatus:
        spec = prompt.spec.rollout
        if len(spec.steps) == 1:
            return _stable(status, canary, f"version {canary} promoted at once (steps: [100])")
        progress = rollout.start(spec, self._now_s())
        status = status.model_copy(update={"canary_version": canary, "phase": "Progressing"})
        return _with_progress(
            status, spec.steps[0], progress, counts, f"canary {canary} started at {spec.steps[0]}%"
        )

    def _step(
        self, prompt: Prompt, status: PromptStatus, counts: dict[int, VersionCounts]
    ) -> PromptStatus:
        spec = prompt.spec.rollout
        stable, canary = status.stable_version, status.canary_version
        assert canary is not None
        progress = rollout.Progress(
            status.step,
            status.step_started_s,
            status.step_requests,
            status.evidence or RolloutEvidence(),
        )
        decision = rollout.decide(
            spec,
            progress,
            _since(counts.get(stable), status.seen.get(str(stable))),
            _since(counts.get(canary), status.seen.get(str(canary))),
            self._now_s(),
        )
        if decision.action == "rollback":
            status = _stable(status, stable, f"canary {canary} rolled back: {decision.reason}")
            status = _rolled_back(status, canary)
            return status.model_copy(
                update={
                    "phase": "RolledBack",
                    "rolled_back": [*status.rolled_back, canary],
                    "evidence": decision.progress.evidence,
                }
            )
        if decision.action == "promote":
            status = _stable(status, canary, f"canary {canary} promoted: {decision.reason}")
            return status.model_copy(update={"evidence": decision.progress.evidence})
        weight = spec.steps[decision.progress.step]
        message = (
            f"canary {canary} at {weight}%: {decision.reason}"
            if decision.action == "hold"
            else f"canary {canary} {decision.reason}"
        )
        return _with_progress(status, weight, decision.progress, counts, message)

    def _write(self, prompt: Prompt, status: PromptStatus) -> None:
        ok = status.phase != "RolledBack"
        reason = {"Stable": "Serving", "Progressing": "CanaryRunning", "RolledBack": "RolledBack"}
        ready = condition("Ready", ok, reason[status.phase], status.message, self._timestamp())
        old = {c.type: c for c in prompt.status.conditions}
        if old.get("Ready") is not None and old["Ready"].status == ready.status:
            ready = ready.model_copy(
                update={"last_transition_time": old["Ready"].last_transition_time}
            )
        status = status.model_copy(update={"conditions": [ready]})
        if status != prompt.status:
            self._store.set_status(prompt.key, status.model_dump(mode="json", by_alias=True))


def _since(now: VersionCounts | None, seen: VersionCounts | None) -> VersionCounts:
    """What was counted since ``seen``; all of ``now`` if the counters restarted meanwhile."""
    now = now or VersionCounts()
    if seen is None:
        return now
    fields = VersionCounts.model_fields
    if any(getattr(now, f) < getattr(seen, f) for f in fields):
        return now
    return VersionCounts(**{f: getattr(now, f) - getattr(seen, f) for f in fields})


def _weights(status: PromptStatus, shares: dict[int, tuple[int, VersionState]]) -> PromptStatus:
    """``status`` with these versions' weights and states; the others get weight 0, and
    those that served (stable or canary) are ``Retired``."""
    zeroed = [
        v.model_copy(
            update={"weight": 0, "state": "Retired" if v.state in ("Stable", "Canary") else v.state}
        )
        for v in status.versions
        if v.version not in shares
    ]
    new = [VersionWeight(version=v, weight=w, state=s) for v, (w, s) in shares.items()]
    return status.model_copy(update={"versions": sorted([*zeroed, *new], key=lambda v: v.version)})


def _stable(status: PromptStatus, version: int, message: str) -> PromptStatus:
    status = _weights(status, {version: (100, "Stable")})
    return status.model_copy(
        update={
            "phase": "Stable",
            "stable_version": version,
            "canary_version": None,
            "step": 0,
            "step_requests": 0,
            "message": message,
        }
    )


def _rolled_back(status: PromptStatus, version: int) -> PromptStatus:
    """``status`` with ``version`` at weight 0, ``RolledBack``, the others as they were."""
    kept = [v for v in status.versions if v.version != version]
    rolled_back = VersionWeight(version=version, weight=0, state="RolledBack")
    return status.model_copy(
        update={"versions": sorted([*kept, rolled_back], key=lambda v: v.version)}
    )


def _with_progress(
    status: PromptStatus,
    weight: int,
    progress: rollout.Progress,
    counts: dict[int, VersionCounts],
    message: str,
) -> PromptStatus:
    canary = status.canary_version
    assert canary is not None
    status = _weights(
        status, {status.stable_version: (100 - weight, "Stable"), canary: (weight, "Canary")}
    )
    return status.model_copy(
        update={
            "step": progress.step,
            "step_started_s": progress.step_started_s,
            "step_requests": progress.step_requests,
            "evidence": progress.evidence,
            "seen": {str(v): c for v, c in counts.items()},
            "message": message,
        }
    )
