"""Start-or-wait under forecast uncertainty: optimal stopping on the forecast's own past errors.

The receding-horizon rule (``planner.next_region``) starts when the point forecast's cheapest
start is now. This module is the alternative that prices uncertainty: it starts iff the expected
cost of starting now is at most the expected cost of waiting, computed by backward induction,
``V_last = mu_last`` and ``V_j = E[min(mu_j + e_j, V_{j+1})]``, where ``mu_j`` is the forecast
cost of the block starting ``j`` hours from now (less the forecast's recent mean error at that
lead) and ``e_j`` is Gaussian with the variance the estimate will lose before hour ``j`` comes
(the error variance at lead ``j`` minus that at lead 0).

The error statistics come from the forecaster's own past: at hour ``t`` only forecasts whose
whole target block ended before ``t`` count (``block_error_stats``), so nothing peeks.

Measured on every provided region it does *worse* than the point rule (see
docs/energy-and-carbon.md): forecast revisions are strongly correlated across hours, so treating
them as independent overvalues waiting. It stays selectable to compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

MIN_ERRORS = 24  # fewer past errors than this at a lead: fall back to a wide guess


@dataclass(frozen=True)
class BlockErrorStats:
    """Per origin hour and lead: mean and variance of past block-cost forecast errors."""

    mean: Array  # [origin, lead]
    var: Array  # [origin, lead]


def block_sums(rows: Array, job_h: int, width: int) -> Array:
    """``out[t, j]`` = sum of ``rows[t, j : j + job_h]``: the forecast cost of starting at lead j."""
    cumulative = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(rows, axis=1)], axis=1)
    out: Array = cumulative[:, job_h : job_h + width] - cumulative[:, :width]
    return out


def block_error_stats(
    values: Array, forecast: Array, job_h: int, width: int, window_h: int = 28 * 24
) -> BlockErrorStats:
    """Rolling error statistics of the block-cost forecast, from errors already observable.

    At origin ``t`` and lead ``j`` it averages over the last ``window_h`` origins ``o`` whose
    target block ``o + j .. o + j + job_h - 1`` ended before ``t`` (``o + j + job_h <= t``).
    """
    n = len(values)
    predicted = block_sums(forecast, job_h, width)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    true_blocks = np.full(n + width, np.nan)
    true_blocks[: n - job_h + 1] = cumulative[job_h:] - cumulative[:-job_h]
    origins = np.arange(n)
    mean = np.zeros((n, width))
    var = np.full((n, width), np.nan)
    for lead in range(width):
        error = predicted[:, lead] - true_blocks[lead : lead + n]
        known = ~np.isnan(error)
        e = np.where(known, error, 0.0)
        c1, c2, cn = (np.concatenate([[0.0], np.cumsum(x)]) for x in (e, e * e, known * 1.0))
        hi = np.clip(origins - lead - job_h + 1, 0, n)  # origins < hi have ended before t
        lo = np.clip(hi - window_h, 0, n)
        count = cn[hi] - cn[lo]
        enough = count >= MIN_ERRORS
        safe = np.maximum(count, 1.0)
        m = (c1[hi] - c1[lo]) / safe
        mean[:, lead] = np.where(enough, m, 0.0)
        var[:, lead] = np.where(enough, (c2[hi] - c2[lo]) / safe - m * m, np.nan)
    wide = (0.1 * np.abs(predicted) * (1.0 + np.arange(width) / 6.0)) ** 2
    return BlockErrorStats(mean, np.where(np.isnan(var), wide, np.maximum(var, 0.0)))


def _expected_min(mu: float, sd: float, cap: float) -> float:
    """E[min(X, cap)] for X ~ N(mu, sd^2)."""
    if sd <= 1e-12:
        return min(mu, cap)
    z = (cap - mu) / sd
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return cap - ((cap - mu) * cdf + sd * pdf)


def start_now(costs: Array, error_var: Array, error_mean: Array) -> bool:
    """Start now iff the bias-corrected cost now is at most the value of waiting optimally.

    ``costs[j]`` is the forecast cost of starting ``j`` hours from now, the last entry being the
    last start that meets the deadline; the statistics are per lead as in ``BlockErrorStats``.
    """
    mu = costs - error_mean
    if len(mu) == 1:
        return True
    revision_sd = np.sqrt(np.maximum(error_var - error_var[0], 0.0))
    value = float(mu[-1])
    for j in range(len(mu) - 2, 0, -1):
        value = _expected_min(float(mu[j]), float(revision_sd[j]), value)
    return bool(mu[0] <= value)
