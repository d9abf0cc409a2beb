"""When a canary prompt version moves to its next traffic step, is promoted, or is rolled back.

The statistic is Wald's sequential probability ratio test (A. Wald, "Sequential Tests of
Statistical Hypotheses", Ann. Math. Statist. 16(2), 1945) on the *conditional binomial* of
two rates: given that ``b`` bad events (errors, slow responses, negative feedback) happened
among ``n_c`` canary and ``n_s`` stable exposures, the number from the canary is
Binomial(``b``, θ) with

    θ0 = s                          under H0: the canary's rate equals the stable's,
    θ1 = k·s / (k·s + 1 − s)        under H1: it is ``k`` (``worseBy``) times the stable's,

where ``s = n_c / (n_c + n_s)`` is the canary's share of the exposures (exact for Poisson
counts; for per-request outcomes an approximation, good while bad events are a small fraction
of the exposures). Conditioning removes
the unknown base rate, so no rate has to be configured (the device of the binomial MaxSPRT
for drug-safety surveillance, Kulldorff et al., Sequential Analysis 30(1), 2011). Each
reconcile adds the log-likelihood ratio of what happened since the last one, with that
interval's own share, so the weights may change between steps. An interval in which one
version had no exposure carries no information (its bad events are certainly the other's
under both hypotheses), so its counts wait, pending, and are tested with the next interval
in which both versions had some:

    Λ += c·log(θ1/θ0) + (b − c)·log((1 − θ1)/(1 − θ0))        (c of the b bad events were canary's)

Worked example: at 5% traffic (s = 0.05) and k = 2, θ1 = 0.0952; each canary error adds
log(0.0952/0.05) = +0.644 and each stable error log(0.9048/0.95) = −0.049. With α = 0.05 split
over the three signals and β = 0.2 the rollback bound is log(0.8/0.0167) = 3.87: about six
canary errors more than the canary's share explains roll it back.

The likelihood ratio is a martingale under H0, so by Ville's inequality the chance that
``Λ`` ever reaches ``log((1 − β)/α_signal)`` for a version that is no worse is at most
``α_signal / (1 − β)``, however long the canary runs; with α split evenly over the signals
(Bonferroni), a rollout's false-rollback chance is at most ``α / (1 − β)``. Promotion is by
time and traffic (every step held ``stepInterval`` with ``minRequests`` canary requests), so
how likely a bad version is promoted depends on how much traffic it sees:
``tests/unit/policy/test_rollout.py`` measures both rates on simulated traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from kapell.api.prompt import PromptRollout, RolloutEvidence, VersionCounts
from kapell.api.units import parse_duration

SIGNALS: dict[str, tuple[str, str]] = {
    "errors": ("requests", "errors"),
    "slow": ("requests", "slow"),
    "negative": ("feedback", "negative"),
}
"""Each signal: (the exposure it is counted among, the bad event)."""

GROUPS: dict[str, list[str]] = {
    exposure: [s for s, (e, _) in SIGNALS.items() if e == exposure]
    for exposure in dict.fromkeys(e for e, _ in SIGNALS.values())
}
"""The signals counted among each exposure, tested together."""

Action = Literal["hold", "advance", "promote", "rollback"]


@dataclass(frozen=True)
class Progress:
    """Where a canary is: its step (index into ``steps``), since when, with how many canary
    requests at this step, and the test's evidence since the canary started."""

    step: int
    step_started_s: float
    step_requests: int
    evidence: RolloutEvidence


@dataclass(frozen=True)
class Decision:
    action: Action
    progress: Progress
    reason: str


def bounds(rollout: PromptRollout) -> tuple[float, float]:
    """Wald's (lower, upper) bounds on one signal's log-likelihood ratio, α split evenly."""
    alpha = rollout.alpha / len(SIGNALS)
    return math.log(rollout.beta / (1 - alpha)), math.log((1 - rollout.beta) / alpha)


def llr_increment(
    canary_exposed: int, stable_exposed: int, canary_bad: int, stable_bad: int, worse_by: float
) -> float:
    """The conditional-binomial log-likelihood ratio of one interval's bad events (0 when
    one version saw no exposure: then the split of bad events says nothing)."""
    if canary_exposed <= 0 or stable_exposed <= 0:
        return 0.0
    share = canary_exposed / (canary_exposed + stable_exposed)
    theta1 = worse_by * share / (worse_by * share + 1 - share)
    return canary_bad * math.log(theta1 / share) + stable_bad * math.log((1 - theta1) / (1 - share))


def start(rollout: PromptRollout, now_s: float) -> Progress:
    """A canary's progress at its first step."""
    lower, upper = bounds(rollout)
    evidence = RolloutEvidence(llr=dict.fromkeys(SIGNALS, 0.0), lower=lower, upper=upper)
    return Progress(0, now_s, 0, evidence)


def _add(total: VersionCounts, new: VersionCounts) -> VersionCounts:
    return VersionCounts(
        **{f: getattr(total, f) + getattr(new, f) for f in VersionCounts.model_fields}
    )


def decide(
    rollout: PromptRollout,
    progress: Progress,
    stable_new: VersionCounts,
    canary_new: VersionCounts,
    now_s: float,
) -> Decision:
    """Fold in what each version did since the last call, then say what to do.

    ``rollback`` as soon as a signal's ratio reaches the upper bound; otherwise ``advance``
    (or ``promote`` into the last step) once the step has lasted ``stepInterval`` and seen
    ``minRequests`` canary requests; else ``hold``.
    """
    old = progress.evidence
    llr = dict(old.llr)
    stable, canary = _add(old.pending_stable, stable_new), _add(old.pending_canary, canary_new)
    for exposure, signals in GROUPS.items():
        if getattr(stable, exposure) == 0 or getattr(canary, exposure) == 0:
            continue
        for signal in signals:
            bad = SIGNALS[signal][1]
            llr[signal] = llr.get(signal, 0.0) + llr_increment(
                getattr(canary, exposure), getattr(stable, exposure),
                getattr(canary, bad), getattr(stable, bad), rollout.worse_by,
            )  # fmt: skip
        tested = dict.fromkeys([exposure, *(SIGNALS[s][1] for s in signals)], 0)
        stable, canary = stable.model_copy(update=tested), canary.model_copy(update=tested)
    evidence = old.model_copy(
        update={
            "llr": llr,
            "stable": _add(old.stable, stable_new),
            "canary": _add(old.canary, canary_new),
            "pending_stable": stable,
            "pending_canary": canary,
        }
    )
    held = Progress(
        progress.step, progress.step_started_s, progress.step_requests + canary_new.requests,
        evidence,
    )  # fmt: skip
    worst = max(llr, key=lambda s: llr[s])
    if llr[worst] >= evidence.upper:
        counted, bad = SIGNALS[worst]
        c, s = evidence.canary, evidence.stable
        return Decision(
            "rollback",
            held,
            f"{worst}: log-likelihood ratio {llr[worst]:.2f} >= {evidence.upper:.2f} "
            f"(canary {getattr(c, bad)}/{getattr(c, counted)} {counted}, "
            f"stable {getattr(s, bad)}/{getattr(s, counted)}): worse by {rollout.worse_by:g}x",
        )
    waited_s = now_s - progress.step_started_s
    interval_s = parse_duration(rollout.step_interval)
    if waited_s < interval_s or held.step_requests < rollout.min_requests:
        return Decision(
            "hold",
            held,
            f"{waited_s:.0f}s of {interval_s:g}s and {held.step_requests} of "
            f"{rollout.min_requests} canary requests at this step",
        )
    step = progress.step + 1
    action: Action = "promote" if step == len(rollout.steps) - 1 else "advance"
    accepted = [s for s, v in llr.items() if v <= evidence.lower]
    return Decision(
        action,
        Progress(step, now_s, 0, evidence),
        f"to {rollout.steps[step]}% after {waited_s:.0f}s and {held.step_requests} canary "
        f"requests; no signal worse (accepted as no worse: {', '.join(accepted) or 'none yet'})",
    )
