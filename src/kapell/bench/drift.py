"""How often drift detection is wrong: false alarms on stationary replays, misses on a shift.

Each replay draws a reference and a current window from one traffic distribution (prompt
lengths log-normal, mostly Latin prompts, output lengths capped at ``max_tokens`` so many tie,
latency growing with output, 1.5 % errors) and compares them with ``policy.drift``; a shifted
replay draws the current window from another corpus (prompts four times longer, mostly
Cyrillic), a subtly shifted one from prompts 30 % longer. The baseline, measured on the same windows, is the rule of thumb that a PSI above
0.25 is a shift. The measured rates come with a 95 % Wilson upper bound, since a few thousand
replays measure a rate of 0.001 only roughly.

A loaded machine is replayed too: latency times a load factor whose log is an AR(1) process in
arrival order (``LOAD_SD``, ``LOAD_CORRELATION_REQUESTS``, fitted to a stream recorded on this
project's shared 2-core machine while a CPU burner was switched on and off every 2 s), stationary
and with replicas ``SLOWER`` times slower. There the rates without the autocorrelation
correction and the effect floor (PSI above the independent-sample threshold, as before) are
measured on the same windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kapell.policy.drift import (
    FEATURES,
    DriftSettings,
    RequestSample,
    compare_windows,
    threshold,
)

RULE_OF_THUMB_PSI = 0.25
LOAD_SD = 0.45
"""Standard deviation of the log load factor: the recorded stream's log latency, less what its
``max_tokens`` explain, varied by 0.52, of which the correlated part is about 0.45."""
LOAD_CORRELATION_REQUESTS = 30.0
"""Requests over which the load factor's autocorrelation falls by e (0.76 at lag 1 and 0.41 at
lag 20 in the recording)."""
SLOWER = 3.0
RUN_WINDOWS = 10
"""Consecutive current windows after one reference in a replay of runs (``runs``)."""
RUN = 3
"""Windows in a row that must drift for an alert whose ``for`` spans them."""
Traffic = Callable[[np.random.Generator, int], list[RequestSample]]


def load_factor(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` consecutive load factors (log AR(1), starting from its stationary distribution)."""
    phi = math.exp(-1 / LOAD_CORRELATION_REQUESTS)
    noise = rng.normal(0.0, LOAD_SD * math.sqrt(1 - phi * phi), n).tolist()
    log_load = [float(rng.normal(0.0, LOAD_SD))]
    for step in noise[1:]:
        log_load.append(phi * log_load[-1] + step)
    return np.exp(log_load)


def traffic(
    prompt_scale: float = 1.0,
    cyrillic_share: float = 0.05,
    loaded: bool = False,
    slower: float = 1.0,
) -> Traffic:
    """A request distribution; ``prompt_scale`` and ``cyrillic_share`` move its inputs,
    ``loaded`` multiplies latency by a load factor, ``slower`` by a constant."""
    scripts = ["latin", "cyrillic", "cjk", "none"]
    weights = np.array([0.9 - cyrillic_share + 0.05, cyrillic_share, 0.04, 0.01])
    outcomes = ["ok", "client_error", "server_error"]

    def draw(rng: np.random.Generator, n: int) -> list[RequestSample]:
        chars = np.rint(rng.lognormal(math.log(400 * prompt_scale), 1.0, n)).astype(int)
        script = rng.choice(scripts, n, p=weights / weights.sum())
        tokens = np.minimum(rng.geometric(1 / 120, n), 256)
        latency = (0.05 + tokens * 0.02 * rng.gamma(20.0, 1 / 20.0, n)) * slower
        if loaded:
            latency = latency * load_factor(rng, n)
        outcome = rng.choice(outcomes, n, p=[0.985, 0.01, 0.005])
        return [
            RequestSample(int(c), str(s), int(t), float(lat), str(o))
            for c, s, t, lat, o in zip(chars, script, tokens, latency, outcome, strict=True)
        ]

    return draw


def wilson_upper(hits: int, n: int, z: float = 1.96) -> float:
    """The upper end of the Wilson score interval for a rate of ``hits`` in ``n``."""
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


def replay(
    settings: DriftSettings, reference: Traffic, current: Traffic, replays: int, seed: int
) -> dict[str, object]:
    """Alarm rates per feature and per window (any feature), kapell's, the baseline's and those
    of PSI above the independent-sample threshold with no effect floor (``uncorrected``)."""
    rng = np.random.default_rng(seed)
    alarms = dict.fromkeys((f.name for f in FEATURES), 0)
    baseline = dict.fromkeys(alarms, 0)
    uncorrected = dict.fromkeys(alarms, 0)
    any_alarm = any_baseline = 0
    alpha = settings.false_alarm_rate
    for _ in range(replays):
        ref = reference(rng, settings.reference_requests)
        cur = current(rng, settings.window_requests)
        results = compare_windows(ref, cur, settings)
        for r in results:
            alarms[r.feature] += r.drifting
            baseline[r.feature] += r.statistic > RULE_OF_THUMB_PSI
            uncorrected[r.feature] += r.statistic > threshold(
                len(ref), len(cur), max(1, r.bins - 1), alpha
            )
        any_alarm += any(r.drifting for r in results)
        any_baseline += any(r.statistic > RULE_OF_THUMB_PSI for r in results)
    return {
        "replays": replays,
        "per_feature": {k: v / replays for k, v in alarms.items()},
        "per_feature_upper95": {k: wilson_upper(v, replays) for k, v in alarms.items()},
        "any_feature": any_alarm / replays,
        "any_feature_upper95": wilson_upper(any_alarm, replays),
        "baseline_per_feature": {k: v / replays for k, v in baseline.items()},
        "baseline_any_feature": any_baseline / replays,
        "uncorrected_per_feature": {k: v / replays for k, v in uncorrected.items()},
    }


def runs(
    settings: DriftSettings, reference: Traffic, current: Traffic, replays: int, seed: int
) -> dict[str, object]:
    """Per feature, the share of replays (one reference, then ``RUN_WINDOWS`` windows drawn as
    one stream, so the load carries over between them) with ``RUN`` drifting windows in a row:
    what an alert waiting that long would see."""
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys((f.name for f in FEATURES), 0)
    n = settings.window_requests
    for _ in range(replays):
        ref = reference(rng, settings.reference_requests)
        stream = current(rng, n * RUN_WINDOWS)
        drifting = [
            {r.feature for r in compare_windows(ref, stream[i * n : (i + 1) * n], settings)
             if r.drifting}
            for i in range(RUN_WINDOWS)
        ]  # fmt: skip
        for feature in hits:
            flags = [feature in d for d in drifting]
            hits[feature] += any(all(flags[i : i + RUN]) for i in range(RUN_WINDOWS - RUN + 1))
    return {
        "replays": replays,
        "windows": RUN_WINDOWS,
        "in_a_row": RUN,
        "per_feature": {k: v / replays for k, v in hits.items()},
        "per_feature_upper95": {k: wilson_upper(v, replays) for k, v in hits.items()},
    }


def run_drift_bench(settings: DriftSettings, replays: int, seed: int = 0) -> dict[str, object]:
    """False alarms (stationary) and detections (shifted) for ``settings``, with the baseline."""
    stationary = traffic()
    shifted, subtle = traffic(prompt_scale=4.0, cyrillic_share=0.6), traffic(prompt_scale=1.3)
    loaded, slower = traffic(loaded=True), traffic(loaded=True, slower=SLOWER)
    return {
        "settings": {
            "reference_requests": settings.reference_requests,
            "window_requests": settings.window_requests,
            "false_alarm_rate": settings.false_alarm_rate,
            "bins": settings.bins,
            "latency_shift": settings.latency_shift,
        },
        "load": {"sd": LOAD_SD, "correlation_requests": LOAD_CORRELATION_REQUESTS},
        "slower": SLOWER,
        "stated_per_feature": settings.false_alarm_rate,
        "stated_any_feature": min(1.0, len(FEATURES) * settings.false_alarm_rate),
        "stationary": replay(settings, stationary, stationary, replays, seed),
        "shifted": replay(settings, stationary, shifted, max(1, replays // 10), seed + 1),
        "subtle_shift": replay(settings, stationary, subtle, max(1, replays // 10), seed + 2),
        "stationary_loaded": replay(settings, loaded, loaded, replays, seed + 3),
        "slower_loaded": replay(settings, loaded, slower, max(1, replays // 10), seed + 4),
        "stationary_loaded_runs": runs(settings, loaded, loaded, max(1, replays // 10), seed + 5),
        "slower_loaded_runs": runs(settings, loaded, slower, max(1, replays // 20), seed + 6),
    }
