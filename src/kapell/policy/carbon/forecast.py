"""Carbon-intensity forecasts that see only the past.

Every forecaster answers ``matrix(values, horizon)``: row ``t`` is its forecast of hours
``t .. t+horizon-1`` made from ``values[:t]`` alone (the hour being entered is not yet known).
That contract is what "no peeking" means here, and a property test checks it by changing the
future and asserting the row does not move. ``predict(history, horizon)`` is one such row.

- ``seasonal-naive``: each hour repeats the same hour of the last observed day.
- ``seasonal-ridge`` (the default): for each lead time a linear model, refitted every day on the
  last eight weeks, mixes yesterday's same hour, the seven-day same-hour mean, last week's same
  hour, the latest two readings, the last day's mean and the latest reading's departure from its
  usual level. It learns per region how far persistence carries and how strong the daily cycle
  is, so nothing is tuned to one grid. Too little history falls back to seasonal-naive.
- ``perfect``: the truth, for the oracle only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from kapell.api.errors import KapellError

DAY_H = 24
WEEK_H = 168
FIRST_ORIGIN = WEEK_H + 1  # the earliest origin with a full week of history for every feature

Array = NDArray[np.float64]


class Forecaster(Protocol):
    """Forecasts hourly intensity from the past only."""

    @property
    def name(self) -> str:
        """The name the CLI's ``--forecast`` takes."""
        ...

    def matrix(self, values: Array, horizon: int) -> Array:
        """Row ``t`` forecasts ``values[t : t+horizon]`` from ``values[:t]``."""
        ...


def predict(forecaster: Forecaster, history: Array, horizon: int) -> Array:
    """The forecast of the ``horizon`` hours that follow ``history``."""
    padded = np.concatenate([history, np.zeros(1)])
    row: Array = forecaster.matrix(padded, horizon)[len(history)]
    return row


def _seasonal_index(origins: NDArray[np.int64], horizon: int, period: int) -> NDArray[np.int64]:
    """Index of the same hour one period (or more) before each target, always < its origin."""
    lead = np.arange(horizon)
    return origins[:, None] + lead[None, :] - period * (lead[None, :] // period + 1)


@dataclass(frozen=True)
class SeasonalNaive:
    """Tomorrow looks like today: each hour repeats the last observed same hour."""

    name: str = "seasonal-naive"

    def matrix(self, values: Array, horizon: int) -> Array:
        n = len(values)
        out = np.empty((n, horizon))
        origins = np.arange(n)
        idx = _seasonal_index(origins, horizon, DAY_H)
        ok = origins >= DAY_H
        out[ok] = values[idx[ok]]
        for t in np.flatnonzero(~ok):
            out[t] = values[t - 1] if t else 0.0
        return out


@dataclass(frozen=True)
class Perfect:
    """The future itself (padded with the last value past the end): the oracle's forecast."""

    name: str = "perfect"

    def matrix(self, values: Array, horizon: int) -> Array:
        padded = np.concatenate([values, np.full(horizon, values[-1])])
        idx = np.arange(len(values))[:, None] + np.arange(horizon)[None, :]
        future: Array = padded[idx]
        return future


def _features(values: Array, origins: NDArray[np.int64], horizon: int) -> Array:
    """Features of each (origin, lead): shape (len(origins), horizon, 8); origins >= FIRST_ORIGIN."""
    day_idx = _seasonal_index(origins, horizon, DAY_H)
    same_hour_yesterday = values[day_idx]
    week_mean = np.mean([values[day_idx - DAY_H * d] for d in range(7)], axis=0)
    last_week = values[_seasonal_index(origins, horizon, WEEK_H)]
    latest = values[origins - 1]
    usual_latest = np.mean([values[origins - 1 - DAY_H * (d + 1)] for d in range(7)], axis=0)
    day_mean = np.convolve(values, np.ones(DAY_H) / DAY_H, "valid")[origins - DAY_H]
    per_origin = [latest, values[origins - 2], day_mean, latest - usual_latest]
    columns = [np.ones_like(same_hour_yesterday), same_hour_yesterday, week_mean, last_week]
    columns += [np.broadcast_to(c[:, None], same_hour_yesterday.shape) for c in per_origin]
    return np.stack(columns, axis=-1)


@dataclass(frozen=True)
class SeasonalRidge:
    """Per-lead linear models over seasonal and persistence features, refitted daily."""

    name: str = "seasonal-ridge"
    train_days: int = 56
    min_train_days: int = 7
    refit_h: int = DAY_H
    ridge: float = 1.0

    def matrix(self, values: Array, horizon: int) -> Array:
        n = len(values)
        out = SeasonalNaive().matrix(values, horizon)
        first = FIRST_ORIGIN + self.min_train_days * DAY_H
        if n <= first:
            return out
        origins = np.arange(FIRST_ORIGIN, n, dtype=np.int64)
        feats = _features(values, origins, horizon)  # row i is origin FIRST_ORIGIN + i
        coef: Array | None = None
        for t in range(first, n):
            if coef is None or (t - first) % self.refit_h == 0:
                coef = self._fit(values, feats, t, horizon)
            out[t] = np.einsum("hf,hf->h", feats[t - FIRST_ORIGIN], coef)
        return out

    def _fit(self, values: Array, feats: Array, now: int, horizon: int) -> Array:
        """Coefficients per lead from origins whose target hour is already observed at ``now``."""
        lo = max(FIRST_ORIGIN, now - self.train_days * DAY_H)
        n_feat = feats.shape[-1]
        coef = np.zeros((horizon, n_feat))
        for lead in range(horizon):
            hi = now - lead  # origin o predicts hour o + lead, which must be < now
            if hi - lo < DAY_H:
                coef[lead] = coef[lead - 1] if lead else np.eye(n_feat)[1]
                continue
            x = feats[lo - FIRST_ORIGIN : hi - FIRST_ORIGIN, lead]
            y = values[lo + lead : hi + lead]
            gram = x.T @ x + self.ridge * np.eye(n_feat)
            coef[lead] = np.linalg.solve(gram, x.T @ y)
        return coef


def mae_by_lead(values: Array, forecast: Array, first: int) -> Array:
    """Mean absolute error at each lead over origins ``first ..`` whose targets are all in range."""
    horizon = forecast.shape[1]
    origins = np.arange(first, len(values) - horizon + 1)
    if not len(origins):
        raise KapellError(f"a {horizon} h forecast needs more than {first + horizon} h of data")
    truth = values[origins[:, None] + np.arange(horizon)[None, :]]
    error: Array = np.mean(np.abs(forecast[origins] - truth), axis=0)
    return error


FORECASTERS: dict[str, Forecaster] = {
    f.name: f for f in (SeasonalRidge(), SeasonalNaive(), Perfect())
}
DEFAULT_FORECAST = SeasonalRidge.name


def forecaster_named(name: str) -> Forecaster:
    """The forecaster called ``name``; a user error names the choices."""
    if name not in FORECASTERS:
        raise KapellError(f"unknown forecast {name!r}; choose one of {', '.join(FORECASTERS)}")
    return FORECASTERS[name]
