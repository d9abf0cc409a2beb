"""Drift statistics: χ² thresholds, measured false alarms against the stated rate, windows."""

from __future__ import annotations

import numpy as np
import pytest

from kapell.api.errors import KapellError
from kapell.bench.drift import run_drift_bench
from kapell.policy.drift import (
    FEATURES,
    DriftSettings,
    DriftWindows,
    RequestSample,
    autocorrelation,
    chi2_quantile,
    compare,
    compare_windows,
    effective_size,
    outcome_of,
    psi,
    shift_ratio,
    text_script,
)

LATENCY = next(f for f in FEATURES if f.name == "latency_s")


@pytest.mark.parametrize(
    ("p", "df", "table"),
    [(0.95, 1, 3.841), (0.999, 2, 13.816), (0.95, 5, 11.070), (0.999, 9, 27.877)],
)
def test_chi2_quantile_matches_the_table(p: float, df: int, table: float) -> None:
    assert chi2_quantile(p, df) == pytest.approx(table, rel=0.01)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-3)
    assert 0 < psi([50, 50], [60, 40]) < psi([50, 50], [90, 10])


def test_measured_false_alarm_rate_stays_below_the_stated_one() -> None:
    """Stationary replays (fresh reference and current window each time) alarm on no more
    than the stated share of windows, per feature and for a key (any feature, 5α); a shift
    to longer, mostly Cyrillic prompts is caught in every replay."""
    settings = DriftSettings(reference_requests=100, window_requests=100, false_alarm_rate=0.05)
    result = run_drift_bench(settings, replays=500, seed=7)
    stationary = result["stationary"]
    assert isinstance(stationary, dict)
    for feature, rate in stationary["per_feature"].items():
        assert rate <= settings.false_alarm_rate, feature
    assert stationary["any_feature"] <= result["stated_any_feature"]
    assert stationary["baseline_any_feature"] > stationary["any_feature"]  # PSI > 0.25 is noisy
    shifted = result["shifted"]
    assert isinstance(shifted, dict)
    assert shifted["any_feature"] == 1.0
    assert shifted["per_feature"]["prompt_chars"] == 1.0
    assert shifted["per_feature"]["script"] == 1.0


def test_a_loaded_machine_alarms_on_latency_less_often_than_without_the_corrections() -> None:
    """Latency times an autocorrelated load factor, the traffic unchanged: the effect floor
    and the effective sample size keep latency quieter than PSI over the independent-sample
    threshold; replicas three times slower still drift in most windows."""
    settings = DriftSettings(reference_requests=200, window_requests=200, false_alarm_rate=0.01)
    result = run_drift_bench(settings, replays=100, seed=3)
    loaded, slower = result["stationary_loaded"], result["slower_loaded"]
    assert isinstance(loaded, dict) and isinstance(slower, dict)
    assert loaded["per_feature"]["latency_s"] < loaded["uncorrected_per_feature"]["latency_s"] / 2
    assert slower["per_feature"]["latency_s"] >= 0.8
    runs = result["stationary_loaded_runs"]
    assert isinstance(runs, dict) and runs["per_feature"]["latency_s"] <= 0.05


def test_autocorrelation_of_ranks_and_the_effective_size() -> None:
    rng = np.random.default_rng(0)
    independent = rng.normal(size=2000).tolist()
    assert autocorrelation(independent) < 0.05
    assert effective_size(independent) > 1800
    ar = [0.0]
    for e in rng.normal(size=1999):
        ar.append(0.8 * ar[-1] + e)
    assert autocorrelation(ar) == pytest.approx(0.8, abs=0.05)
    assert effective_size(ar) == pytest.approx(2000 * 0.2 / 1.8, rel=0.25)
    assert autocorrelation(list(range(100))) == 0.9  # a trend: capped
    assert autocorrelation([3.0] * 50) == 0.0


def test_windows_are_read_in_order_of_arrival() -> None:
    """Sixteen concurrent requests finish shortest first; in that order latency looks
    autocorrelated, in order of arrival it is not."""
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(-2, 0.5, 400)
    arrivals = np.arange(400) * 0.01
    samples = [RequestSample(100, "latin", 16, float(x), "ok", float(t))
               for x, t in zip(latencies, arrivals, strict=True)]  # fmt: skip
    completed = [s for i in range(0, 400, 16)
                 for s in sorted(samples[i : i + 16], key=lambda s: s.latency_s)]  # fmt: skip
    settings = DriftSettings(reference_requests=200, window_requests=200)
    by_completion = compare(LATENCY, [s.latency_s for s in completed[:200]],
                            [s.latency_s for s in completed[200:]], settings)  # fmt: skip
    by_arrival = next(c for c in compare_windows(completed[:200], completed[200:], settings)
                      if c.feature == "latency_s")  # fmt: skip
    assert by_arrival.threshold < by_completion.threshold / 2


def test_latency_drifts_only_past_its_effect_floor() -> None:
    """Windows of 2000 independent requests make a 30 % slower latency significant; it is not
    drift until the median or p90 has moved by ``latency_shift`` (doubled by default)."""
    rng = np.random.default_rng(2)
    reference = rng.lognormal(-2, 0.5, 2000).tolist()

    def against(scale: float, latency_shift: float = 1.0) -> tuple[bool, bool]:
        settings = DriftSettings(2000, 2000, latency_shift=latency_shift)
        current = (rng.lognormal(-2, 0.5, 2000) * scale).tolist()
        c = compare(LATENCY, reference, current, settings)
        return c.statistic > c.threshold, c.drifting

    assert against(1.3) == (True, False)
    assert against(1.3, latency_shift=0.2) == (True, True)
    assert against(2.5) == (True, True)
    assert against(0.35) == (True, True)  # faster counts too
    tokens = next(f for f in FEATURES if f.name == "output_tokens")
    more = compare(tokens, reference, [x * 1.3 for x in reference[::-1]], DriftSettings(2000, 2000))
    assert more.drifting  # traffic features have no floor


def test_shift_ratio_is_the_quantile_that_moved_most() -> None:
    reference = [float(x) for x in range(1, 101)]
    assert shift_ratio(reference, [2 * x for x in reference]) == pytest.approx(2.0)
    tail = reference[:91] + [x * 5 for x in reference[91:]]
    assert shift_ratio(reference, tail) == pytest.approx(1.0)  # p90 is the 90th value: unmoved
    slower_tail = reference[:85] + [x * 5 for x in reference[85:]]
    assert shift_ratio(reference, slower_tail) > 4
    assert shift_ratio([0.0] * 10, [1.0] * 10) == 1.0


def sample(chars: int, script: str = "latin", outcome: str = "ok") -> RequestSample:
    return RequestSample(chars, script, 16, 0.1, outcome)


def test_windows_fill_the_reference_first_then_compare_each_full_window() -> None:
    windows = DriftWindows(DriftSettings(reference_requests=100, window_requests=50))
    results = [windows.add(sample(100 + i % 40)) for i in range(200)]
    assert results[:149] == [None] * 149 and results[149] is not None
    assert results[150:199] == [None] * 49 and results[199] == windows.last
    assert windows.windows_compared == 2 and len(windows.current) == 0
    assert len(windows.reference) == 100
    assert {c.feature for c in windows.last} == {f.name for f in FEATURES}
    assert not windows.drifting
    for _ in range(50):
        windows.add(sample(5000, "cyrillic"))
    drifting = {c.feature for c in windows.last if c.drifting}
    assert drifting == {"prompt_chars", "script"}


def test_a_rare_outcome_does_not_alarm_but_many_errors_do() -> None:
    settings = DriftSettings(reference_requests=200, window_requests=200)
    outcome = next(f for f in FEATURES if f.name == "outcome")
    reference = ["ok"] * 199 + ["server_error"]
    assert not compare(outcome, reference, ["ok"] * 197 + ["server_error"] * 3, settings).drifting
    assert compare(outcome, reference, ["ok"] * 170 + ["server_error"] * 30, settings).drifting


def test_ties_merge_bins_and_constant_values_never_drift() -> None:
    settings = DriftSettings(reference_requests=50, window_requests=50)
    tokens = next(f for f in FEATURES if f.name == "output_tokens")
    same = compare(tokens, [256.0] * 50, [256.0] * 50, settings)
    assert (same.bins, same.statistic, same.drifting) == (1, 0.0, False)
    longer = compare(tokens, [256.0] * 50, [256.0, 512.0, 512.0, 256.0, 512.0] * 10, settings)
    assert longer.drifting


def test_script_and_outcome() -> None:
    assert text_script("user: Hello") == "latin"
    assert text_script("user: Guten Tag, wie geht's? Ärger") == "latin"
    assert text_script("user: Привет, как дела?") == "cyrillic"
    assert text_script("user: 東京は晴れです") == "cjk"
    assert text_script("مرحبا بالعالم") == "arabic"
    assert text_script("") == text_script("1234 !!") == "none"
    assert [outcome_of(s) for s in (200, 404, 499, 502)] == [
        "ok", "client_error", "cancelled", "server_error",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_requests": 49},
        {"false_alarm_rate": 0.0},
        {"false_alarm_rate": 0.7},
        {"bins": 1},
        {"latency_shift": -0.1},
    ],
)
def test_bad_settings_say_what_is_expected(kwargs: dict[str, float]) -> None:
    with pytest.raises(KapellError, match="drift"):
        DriftSettings(**kwargs)  # type: ignore[arg-type]
