"""Drift statistics: χ² thresholds, measured false alarms against the stated rate, windows."""

from __future__ import annotations

import pytest

from kapell.api.errors import KapellError
from kapell.bench.drift import run_drift_bench
from kapell.policy.drift import (
    FEATURES,
    DriftSettings,
    DriftWindows,
    RequestSample,
    chi2_quantile,
    compare,
    outcome_of,
    psi,
    text_script,
)


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
    [{"window_requests": 49}, {"false_alarm_rate": 0.0}, {"false_alarm_rate": 0.7}, {"bins": 1}],
)
def test_bad_settings_say_what_is_expected(kwargs: dict[str, float]) -> None:
    with pytest.raises(KapellError, match="drift"):
        DriftSettings(**kwargs)  # type: ignore[arg-type]
