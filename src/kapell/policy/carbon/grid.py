"""A carbon forecast that sees the weather: intensity from the grid operators' published forecasts.

The history-only forecasters cannot know tomorrow's wind. Transmission operators publish, the day
before, forecasts of load, wind and solar generation made from numerical weather prediction;
what fossil plants must cover is roughly the residual load, load minus wind and solar, so the
intensity follows it. ``GridRidge`` is, for each lead time, a linear model refitted daily on the
last eight weeks over the published forecast for the target hour (residual load, its share of
load, load and solar), the latest reading with its hour's residual load and share (so the model
learns how long a departure from the published forecast persists), the latest same hour with its
residual load, and ``SeasonalRidge``'s forecast for the target.

No peeking, in both inputs: row ``t`` uses intensities of hours ``< t`` only, and a published value
only if its ``published_h <= t`` (a day-ahead value for day D becomes public at noon of D-1). Where
a target hour's forecast is not yet public, or missing, the row keeps ``SeasonalRidge``'s value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from kapell.api.errors import KapellError
from kapell.policy.carbon.forecast import DAY_H, FIRST_ORIGIN, Array, SeasonalRidge
from kapell.policy.carbon.series import HOUR_S

NEVER = np.iinfo(np.int64).max // 2  # the publication hour of a value that never comes


@dataclass(frozen=True)
class HourlyGrid:
    """Published forecasts on an hourly grid: element ``i`` is hour ``start_h + i``.

    MW values are hourly means (NaN where none); ``published_h[i]`` is the first hour at whose
    start every reading averaged into hour ``i`` was public.
    """

    start_h: int
    published_h: NDArray[np.int64]
    load_mw: Array
    solar_mw: Array
    wind_mw: Array

    def window(self, start_h: int, length: int) -> HourlyGrid:
        """The same forecasts on hours ``start_h .. start_h+length-1`` (missing outside)."""
        src = np.arange(start_h, start_h + length) - self.start_h
        inside = (src >= 0) & (src < len(self.load_mw))
        safe = np.where(inside, src, 0)

        def take(x: Array) -> Array:
            return np.where(inside, x[safe], np.nan)

        published = np.where(inside, self.published_h[safe], NEVER)
        return HourlyGrid(start_h, published, take(self.load_mw), take(self.solar_mw),
                          take(self.wind_mw))  # fmt: skip


def grid_to_hourly(
    times_s: Sequence[float],
    published_s: Sequence[float],
    load_mw: Sequence[float],
    solar_mw: Sequence[float],
    wind_mw: Sequence[float],
) -> HourlyGrid:
    """Average sub-hourly published forecasts into UTC hours (hours as in ``series``)."""
    if not times_s:
        raise KapellError("grid forecast: no intervals")
    hours = np.floor(np.asarray(times_s, dtype=np.float64) / HOUR_S).astype(np.int64)
    start = int(hours.min())
    length = int(hours.max()) - start + 1
    slot = hours - start
    published = np.full(length, -NEVER, dtype=np.int64)
    np.maximum.at(published, slot, np.ceil(np.asarray(published_s) / HOUR_S).astype(np.int64))

    def mean(values: Sequence[float]) -> Array:
        x = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(x)
        sums = np.bincount(slot[ok], weights=x[ok], minlength=length)
        counts = np.bincount(slot[ok], minlength=length)
        out: Array = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return out

    return HourlyGrid(start, published, mean(load_mw), mean(solar_mw), mean(wind_mw))


def _target_features(grid: HourlyGrid) -> Array:
    """Per hour: residual load, its share of load, load and solar (GW), shape (hours, 4)."""
    residual = grid.load_mw - grid.solar_mw - grid.wind_mw
    with np.errstate(invalid="ignore", divide="ignore"):
        share = residual / grid.load_mw
    return np.stack([residual / 1e3, share, grid.load_mw / 1e3, grid.solar_mw / 1e3], axis=-1)


@dataclass(frozen=True)
class GridRidge:
    """Per-lead linear models over published grid forecasts and recent intensity, refitted daily.

    ``grid`` must be on the same hours as the ``values`` given to ``matrix`` (``HourlyGrid.window``).
    """

    grid: HourlyGrid
    name: str = "grid-ridge"
    train_days: int = 56
    min_train_days: int = 7
    refit_h: int = DAY_H
    ridge: float = 1.0
    history: SeasonalRidge = field(default_factory=SeasonalRidge)

    def matrix(self, values: Array, horizon: int) -> Array:
        n = len(values)
        if len(self.grid.load_mw) < n:
            raise KapellError(f"grid forecast covers {len(self.grid.load_mw)} h, series {n} h")
        out = self.history.matrix(values, horizon)
        first = FIRST_ORIGIN + self.min_train_days * DAY_H
        if n <= first:
            return out
        feats, usable = self._features(values, out)
        coef: Array | None = None
        for t in range(first, n):
            if coef is None or (t - first) % self.refit_h == 0:
                coef = self._fit(values, feats, usable, t, horizon)
            row = np.einsum("hf,hf->h", np.nan_to_num(feats[t]), coef)
            out[t] = np.where(usable[t] & ~np.isnan(row), row, out[t])
        return out

    def _features(self, values: Array, history: Array) -> tuple[Array, NDArray[np.bool_]]:
        """Features of every (origin, lead) and whether all of them were public at the origin.

        Rows before ``FIRST_ORIGIN`` are never usable (no week of history).
        """
        n, horizon = history.shape
        per_hour = _target_features(self.grid)[:n]
        origins = np.arange(n)[:, None]
        target = np.minimum(origins + np.arange(horizon)[None, :], n - 1)
        same_hour = target - DAY_H * ((target - origins) // DAY_H + 1)  # latest same hour < origin
        latest = np.maximum(origins - 1, 0)
        past = np.maximum(same_hour, 0)
        shape = target.shape
        columns = [
            np.ones(shape),
            *np.moveaxis(per_hour[target], -1, 0),
            np.broadcast_to(values[latest], shape),
            np.broadcast_to(per_hour[latest, 0], shape),
            np.broadcast_to(per_hour[latest, 1], shape),
            values[past],
            per_hour[past, 0],
            history,
        ]
        feats = np.stack(columns, axis=-1)
        published = self.grid.published_h - self.grid.start_h  # as an index of values
        public = (published[target] <= origins) & (published[latest] <= origins)
        public &= published[past] <= origins
        usable = public & ~np.isnan(feats).any(axis=-1) & (origins >= FIRST_ORIGIN)
        usable &= origins + np.arange(horizon)[None, :] < n
        return feats, usable

    def _fit(
        self, values: Array, feats: Array, usable: NDArray[np.bool_], now: int, horizon: int
    ) -> Array:
        """Coefficients per lead from usable origins whose target hour is already observed.

        A lead with under a day of such origins gets NaN: its forecasts stay the history's.
        """
        lo = max(FIRST_ORIGIN, now - self.train_days * DAY_H)
        n_feat = feats.shape[-1]
        coef = np.zeros((horizon, n_feat))
        for lead in range(horizon):
            hi = now - lead  # origin o predicts hour o + lead, which must be < now
            rows = np.flatnonzero(usable[lo:hi, lead]) + lo if hi > lo else np.arange(0)
            if len(rows) < DAY_H:
                coef[lead] = np.nan
                continue
            x = feats[rows, lead]
            gram = x.T @ x + self.ridge * np.eye(n_feat)
            coef[lead] = np.linalg.solve(gram, x.T @ values[rows + lead])
        return coef
