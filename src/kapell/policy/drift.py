"""Whether a model's traffic drifts: a reference window against tumbling current windows.

Each finished request is summarised as a ``RequestSample``: what came in (prompt length in
characters, the prompt's dominant script) and what went out (output tokens, latency, outcome).
After ``warmup_requests`` left out, the first ``reference_requests`` samples of a traffic key
(model, prompt, version) are its reference; after that every ``window_requests`` samples form a current window, compared with
the reference feature by feature when it is full, then dropped.

Each feature is compared with the population-stability index on binned values,
``PSI = Σ (c_i − r_i) · ln(c_i / r_i)`` over bin shares ``r`` (reference) and ``c`` (current).
Numeric features are cut at the reference's deciles; categorical ones bin by category.
PSI is the symmetric Kullback–Leibler (Jeffreys) divergence. When both windows come from the
same distribution, ``PSI · n_r·n_c / (n_r + n_c)`` tends to a χ² with (bins − 1) degrees of
freedom, like Pearson's two-sample χ² it approximates, so the threshold

    (1/n_r + 1/n_c) · χ²_{1−α/2}(bins − 1)

raises a false alarm on at most a fraction α of stationary windows, per feature (half of α
is the asymptotic rate; the other half covers small-sample excess, see ``threshold``).
Example: 10 bins, windows of 1000 and 1000 requests, α = 0.001: χ²_{0.9995}(9) ≈ 29.9, so the
threshold is 0.002 · 29.9 ≈ 0.060 (the rule of thumb "PSI > 0.25 is a shift" misses smaller
shifts, and says nothing of how often it is wrong). With five features a key's false-alarm rate per
window is at most 5α (the union bound). ``kapell.bench.drift`` measures both on stationary
replays, and the unit tests check the measured rate stays below the stated one.

The χ² threshold assumes independent requests. Requests that arrive close together are not:
on a busy machine a stretch of slow requests follows a stretch of load. For numeric features
each window's size is therefore cut to its effective sample size ``n·(1 − ρ)/(1 + ρ)``, with
``ρ`` the lag-1 autocorrelation of the window's ranks in order of arrival (an AR(1) model; 0
when negative), which widens the threshold as much as the dependence narrows the information.

Latency also follows the load on the replicas, not only the traffic: a machine that got busier
shifts it while the stream stays the same, and on a shared machine the median of a window
moved by up to 1.9 times with no change in the traffic. So latency drifts only when the
difference is also large in practice: the median or the p90 of the current window is at least
``1 + latency_shift`` times (or at most ``1/(1 + latency_shift)`` times) the reference's.
Statistical significance says the windows differ; the effect floor says it matters.

Shares are smoothed by half a count per bin, so a bin empty in one window does not make PSI
infinite, and a rare outcome (one error among hundreds) moves it little. Nothing here reads a
clock or does I/O.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import NormalDist
from typing import NamedTuple

from kapell.api.errors import KapellError

Counts = list[int]


class RequestSample(NamedTuple):
    """One finished request, as drift detection sees it."""

    prompt_chars: int
    script: str
    """The prompt's dominant script (``text_script``)."""
    output_tokens: int
    latency_s: float
    outcome: str
    """``ok``, ``client_error`` (4xx), ``server_error`` (5xx) or ``cancelled`` (client left)."""
    arrived_s: float = 0.0
    """When it arrived (any clock): windows fill in order of completion, which sorts
    concurrent requests by their latency; autocorrelation is read in order of arrival."""


@dataclass(frozen=True)
class Feature:
    """One compared feature: a field of ``RequestSample`` and which way it flows."""

    name: str
    direction: str
    """``input`` (what users send) or ``output`` (what the model gives back)."""
    numeric: bool
    load_bound: bool = False
    """Follows the serving machine's load as well as the traffic: drifting also needs a shift
    of at least ``DriftSettings.latency_shift``."""


FEATURES = (
    Feature("prompt_chars", "input", numeric=True),
    Feature("script", "input", numeric=False),
    Feature("output_tokens", "output", numeric=True),
    Feature("latency_s", "output", numeric=True, load_bound=True),
    Feature("outcome", "output", numeric=False),
)


@dataclass(frozen=True)
class DriftSettings:
    """Window sizes and the stated false-alarm rate."""

    reference_requests: int = 1000
    window_requests: int = 1000
    false_alarm_rate: float = 0.001
    """α: the share of stationary windows on which one feature's statistic passes its
    threshold."""
    bins: int = 10
    """Quantile bins of numeric features (fewer when the reference has ties)."""
    warmup_requests: int = 0
    """Requests of a key left out before its reference starts: the first requests after a
    start meet cold replicas and new connections, whose latency no later window repeats."""
    max_keys: int = 512
    """Traffic keys tracked at most; requests of keys beyond it are not tracked."""
    latency_shift: float = 1.0
    """Effect floor of latency: the relative change of its median or p90 below which a
    significant difference is not drift (1.0: doubled, or halved)."""

    def __post_init__(self) -> None:
        if self.warmup_requests < 0:
            raise KapellError(
                f"drift warm-up must be 0 or more requests, got {self.warmup_requests}"
            )
        if self.bins < 2:
            raise KapellError(f"drift needs at least 2 bins, got {self.bins}")
        least = 5 * self.bins
        if min(self.reference_requests, self.window_requests) < least:
            raise KapellError(
                f"drift windows need at least {least} requests each (five per bin: the χ² "
                f"threshold assumes it); got reference {self.reference_requests}, window "
                f"{self.window_requests}"
            )
        if self.latency_shift < 0:
            raise KapellError(
                f"the drift latency shift must be 0 or more (0.5: 1.5 times), got "
                f"{self.latency_shift}"
            )
        if not 0.0 < self.false_alarm_rate < 0.5:
            raise KapellError(
                f"the drift false-alarm rate must be in (0, 0.5), got {self.false_alarm_rate}"
            )


def chi2_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of a χ² with ``df`` degrees of freedom.

    Exact for 1 and 2 degrees of freedom; Wilson–Hilferty's cube-root normal approximation
    above (within 1 % for p ≤ 0.999 and df ≥ 3), so no SciPy is needed.
    """
    if df == 1:
        return NormalDist().inv_cdf((1 + p) / 2) ** 2
    if df == 2:
        return -2.0 * math.log(1 - p)
    z = NormalDist().inv_cdf(p)
    h = 2.0 / (9 * df)
    return float(df * (1 - h + z * math.sqrt(h)) ** 3)


def psi(reference_counts: Sequence[int], current_counts: Sequence[int]) -> float:
    """PSI of two histograms over the same bins, each bin smoothed by half a count.

    >>> round(psi([50, 50], [50, 50]), 6)
    0.0
    >>> round(psi([90, 10], [50, 50]), 3)
    0.853
    """
    ref_total = sum(reference_counts) + 0.5 * len(reference_counts)
    cur_total = sum(current_counts) + 0.5 * len(current_counts)
    total = 0.0
    for ref, cur in zip(reference_counts, current_counts, strict=True):
        r, c = (ref + 0.5) / ref_total, (cur + 0.5) / cur_total
        total += (c - r) * math.log(c / r)
    return total


SMALL_SAMPLE_MARGIN = 2.0


def threshold(n_reference: float, n_current: float, df: int, false_alarm_rate: float) -> float:
    """The PSI above which two windows of these sizes differ, wrong on at most
    ``false_alarm_rate`` of stationary windows.

    The χ² tail is taken at half the rate (``SMALL_SAMPLE_MARGIN``): PSI is only asymptotically
    χ², and with decile cuts from the reference and ties in it, windows of 100 to 1000
    requests alarmed up to 1.4 times the asymptotic rate in ``kapell bench drift``.
    """
    p = 1 - false_alarm_rate / SMALL_SAMPLE_MARGIN
    return (1 / n_reference + 1 / n_current) * chi2_quantile(p, max(1, df))


MAX_AUTOCORRELATION = 0.9
"""Largest lag-1 autocorrelation the effective sample size reads (a window is worth at least
1/19 of its requests): above it a window is one stretch of a trend, not a sample."""


def autocorrelation(values: Sequence[float]) -> float:
    """Lag-1 autocorrelation of ``values``' ranks (ties get their mean rank), in
    [0, ``MAX_AUTOCORRELATION``]: how much each request resembles the one before.

    >>> autocorrelation([1, 2, 3, 4, 5, 6, 7, 8]), autocorrelation([1, 8, 2, 7, 3, 6, 4, 5])
    (0.625, 0.0)
    """
    ranks = _mean_ranks(values)
    centre = (len(ranks) - 1) / 2
    deviations = [r - centre for r in ranks]
    spread = sum(d * d for d in deviations)
    if spread == 0:
        return 0.0
    lagged = sum(a * b for a, b in pairwise(deviations))
    return min(MAX_AUTOCORRELATION, max(0.0, lagged / spread))


def _mean_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2
        start = end + 1
    return ranks


def effective_size(values: Sequence[float]) -> float:
    """Independent requests ``values`` are worth under an AR(1) model: ``n·(1 − ρ)/(1 + ρ)``."""
    rho = autocorrelation(values)
    return len(values) * (1 - rho) / (1 + rho)


def shift_ratio(reference: Sequence[float], current: Sequence[float]) -> float:
    """Current over reference of the median or the p90, whichever moved more (by its log);
    1.0 when a reference quantile is not positive.

    >>> shift_ratio([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]), shift_ratio([1, 2, 3, 4, 5], [1, 2, 3, 4, 9])
    (2.0, 1.5217391304347827)
    """
    ratios = [1.0]
    for q in (0.5, 0.9):
        ref, cur = _quantile(reference, q), _quantile(current, q)
        if ref > 0 and cur > 0:
            ratios.append(cur / ref)
    return max(ratios, key=lambda r: abs(math.log(r)))


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile, linear between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Comparison(NamedTuple):
    """One feature's reference against one current window."""

    feature: str
    direction: str
    statistic: float
    threshold: float
    bins: int
    shift: float | None = None
    """Current over reference of the median or p90 (``shift_ratio``); None for categories."""
    shift_floor: float = 1.0
    """The ``shift`` (or its inverse) a drifting window reaches: 1.0 where any will do."""

    @property
    def drifting(self) -> bool:
        if self.statistic <= self.threshold:
            return False
        return self.shift is None or max(self.shift, 1 / self.shift) >= self.shift_floor


def _histograms(
    reference: Sequence[float], current: Sequence[float], bins: int
) -> tuple[Counts, Counts]:
    """Counts per bin cut at the reference's quantiles (the lower value at each ``i/bins``);
    a value equal to a cut falls in the bin below it, and ties merge bins."""
    ordered = sorted(reference)
    cuts = sorted({ordered[(i * (len(ordered) - 1)) // bins] for i in range(1, bins)})
    ref, cur = [0] * (len(cuts) + 1), [0] * (len(cuts) + 1)
    for value in reference:
        ref[bisect_left(cuts, value)] += 1
    for value in current:
        cur[bisect_left(cuts, value)] += 1
    return ref, cur


def _category_counts(reference: Sequence[str], current: Sequence[str]) -> tuple[Counts, Counts]:
    categories = sorted(set(reference) | set(current))
    index = {c: i for i, c in enumerate(categories)}
    ref, cur = [0] * len(categories), [0] * len(categories)
    for value in reference:
        ref[index[value]] += 1
    for value in current:
        cur[index[value]] += 1
    return ref, cur


MIN_POOLED_COUNT = 10
"""Fewest requests (both windows together) a decile bin may hold; sparser bins are pooled.
Cochran's rule for χ² (about five expected per cell and window); decile bins hold a tenth of
a window by construction, so only ties make them sparse."""
MIN_POOLED_CATEGORY = 20
"""The same for a category. Categories can be arbitrarily rare, and the far tail that a small
false-alarm rate reads is where χ² misjudges sparse cells: with 10, outcomes of 1.5 % errors in
windows of 1000 alarmed on 0.115 % of 20,000 stationary replays at a stated 0.1 %; with 20, on
0.07 %."""


def _pool_sparse(ref: Counts, cur: Counts, least: int) -> tuple[Counts, Counts]:
    """The bins with at least ``least`` requests, plus one bin pooling the others (itself
    joined to the sparsest kept bin if still too sparse); empty bins are dropped."""
    kept = [(r, c) for r, c in zip(ref, cur, strict=True) if r + c >= least]
    sparse = [(r, c) for r, c in zip(ref, cur, strict=True) if 0 < r + c < least]
    if sparse:
        rest = (sum(r for r, _ in sparse), sum(c for _, c in sparse))
        if sum(rest) >= least or not kept:
            kept.append(rest)
        else:
            i = min(range(len(kept)), key=lambda k: sum(kept[k]))
            kept[i] = (kept[i][0] + rest[0], kept[i][1] + rest[1])
    return [r for r, _ in kept], [c for _, c in kept]


def compare(
    feature: Feature,
    reference: Sequence[float | str],
    current: Sequence[float | str],
    settings: DriftSettings,
) -> Comparison:
    """PSI of one feature and its threshold at ``settings.false_alarm_rate``.

    Bins empty in both windows are left out and sparse ones pooled (``MIN_POOLED_COUNT``,
    ``MIN_POOLED_CATEGORY``); the
    degrees of freedom are the bins left minus one, so a category never seen does not loosen
    the threshold. Numeric windows count by their effective sizes (``effective_size``), and a
    load-bound feature's comparison carries its effect floor.
    """
    if not feature.numeric:
        ref, cur = _category_counts([str(v) for v in reference], [str(v) for v in current])
        ref, cur = _pool_sparse(ref, cur, MIN_POOLED_CATEGORY)
        limit = threshold(len(reference), len(current), len(ref) - 1, settings.false_alarm_rate)
        statistic = psi(ref, cur) if len(ref) > 1 else 0.0
        return Comparison(feature.name, feature.direction, statistic, limit, len(ref))
    ref_values, cur_values = [float(v) for v in reference], [float(v) for v in current]
    ref, cur = _histograms(ref_values, cur_values, settings.bins)
    ref, cur = _pool_sparse(ref, cur, MIN_POOLED_COUNT)
    bins = len(ref)
    statistic = psi(ref, cur) if bins > 1 else 0.0
    limit = threshold(
        effective_size(ref_values), effective_size(cur_values), bins - 1, settings.false_alarm_rate
    )
    floor = 1 + settings.latency_shift if feature.load_bound else 1.0
    shift = shift_ratio(ref_values, cur_values)
    return Comparison(feature.name, feature.direction, statistic, limit, bins, shift, floor)


@dataclass
class DriftWindows:
    """The reference and the current window of one traffic key.

    ``add`` returns the comparisons when a sample completes a current window; ``last`` keeps
    them until the next window completes.
    """

    settings: DriftSettings
    reference: list[RequestSample] = field(default_factory=list)
    current: list[RequestSample] = field(default_factory=list)
    last: tuple[Comparison, ...] = ()
    windows_compared: int = 0
    skipped: int = 0
    """Warm-up requests seen so far (up to ``settings.warmup_requests``)."""

    def add(self, sample: RequestSample) -> tuple[Comparison, ...] | None:
        if self.skipped < self.settings.warmup_requests:
            self.skipped += 1
            return None
        if len(self.reference) < self.settings.reference_requests:
            self.reference.append(sample)
            return None
        self.current.append(sample)
        if len(self.current) < self.settings.window_requests:
            return None
        self.last = compare_windows(self.reference, self.current, self.settings)
        self.current = []
        self.windows_compared += 1
        return self.last

    @property
    def drifting(self) -> bool:
        return any(c.drifting for c in self.last)


def compare_windows(
    reference: Sequence[RequestSample], current: Sequence[RequestSample], settings: DriftSettings
) -> tuple[Comparison, ...]:
    """Every feature of ``FEATURES`` compared between two windows, each in order of arrival."""
    reference = sorted(reference, key=lambda s: s.arrived_s)
    current = sorted(current, key=lambda s: s.arrived_s)
    return tuple(
        compare(
            feature,
            [getattr(s, feature.name) for s in reference],
            [getattr(s, feature.name) for s in current],
            settings,
        )
        for feature in FEATURES
    )


_SCRIPTS = (
    (0x0250, "latin"),  # Basic Latin, Latin-1, Latin Extended-A/B
    (0x0370, "other"),  # IPA, combining marks
    (0x0400, "greek"),
    (0x0530, "cyrillic"),
    (0x0590, "other"),  # Armenian
    (0x0600, "hebrew"),
    (0x0780, "arabic"),
    (0x0900, "other"),
    (0x0980, "devanagari"),
    (0x1E00, "other"),
    (0x1F00, "latin"),  # Latin Extended Additional
    (0x2E80, "other"),  # Greek Extended, punctuation, symbols
    (0xA000, "cjk"),  # CJK radicals, kana, Han
    (0xAC00, "other"),
    (0xD7B0, "cjk"),  # Hangul syllables
)
SCRIPT_SAMPLE_CHARS = 512
"""Leading characters of a prompt read to find its script: enough to tell, cheap per request."""


def text_script(text: str) -> str:
    """The script most of ``text``'s leading letters are written in (``none`` without letters).

    >>> text_script("Hello, world"), text_script("Привет, мир"), text_script("你好"), text_script("42")
    ('latin', 'cyrillic', 'cjk', 'none')
    """
    head = text[:SCRIPT_SAMPLE_CHARS]
    if head.isascii():
        return "latin" if any(ch.isalpha() for ch in head) else "none"
    counts: dict[str, int] = {}
    for ch in head:
        if ch.isalpha():
            script = _script_of(ord(ch))
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else "none"


def _script_of(code: int) -> str:
    for end, script in _SCRIPTS:
        if code < end:
            return script
    return "other"


def outcome_of(status: int) -> str:
    """A response status as a drift outcome."""
    if status == 499:
        return "cancelled"
    if status >= 500:
        return "server_error"
    return "client_error" if status >= 400 else "ok"
