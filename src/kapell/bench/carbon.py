"""``kapell bench carbon``: carbon-aware shifting with a forecast vs the oracle vs running at once.

Reads one or more intensity files (several = spatial plus temporal shifting across their
regions, the first being home), replays a job submitted at every hour, and reports savings
against starting at once, the oracle's savings, their ratio and the share of deadlines met.

With ``grid_forecast`` (a folder of a grid operator's published day-ahead forecasts for the one
intensity file's zone) the forecast is ``grid-ridge``, the series is cut to the hours the
forecasts cover, and the same run also measures the history-only ``seasonal-ridge`` on the same
hours (``history_only``) and both forecasts' mean absolute error by lead (``mae_by_lead``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kapell.api.errors import KapellError
from kapell.observe.carbon_sources import read_intensity_csv
from kapell.observe.grid_forecasts import read_entsoe_folder
from kapell.policy.carbon.forecast import (
    DAY_H,
    DEFAULT_FORECAST,
    FIRST_ORIGIN,
    Forecaster,
    SeasonalRidge,
    forecaster_named,
    mae_by_lead,
)
from kapell.policy.carbon.grid import GridRidge, HourlyGrid, grid_to_hourly
from kapell.policy.carbon.series import HourlySeries, align, to_hourly
from kapell.policy.carbon.simulate import ShiftResult, simulate_shifting


def load_series(paths: Sequence[Path], signal: str = "lca") -> list[HourlySeries]:
    """Hourly, aligned series of the files' regions (names made unique by file stem)."""
    hourly = []
    seen: set[str] = set()
    for path in paths:
        readings = read_intensity_csv(path, signal)
        region = readings.region if readings.region not in seen else path.stem
        seen.add(region)
        hourly.append(to_hourly(region, readings.times_s, readings.g_per_kwh))
    return align(hourly)


def load_grid(folder: Path) -> HourlyGrid:
    """A grid operator's published forecasts (ENTSO-E export folder) on the hourly grid."""
    grid = read_entsoe_folder(folder)
    return grid_to_hourly(grid.times_s, grid.published_s, grid.load_mw, grid.solar_mw,
                          grid.wind_mw)  # fmt: skip


def _with_grid(series: list[HourlySeries], folder: Path) -> tuple[HourlySeries, GridRidge]:
    """The one series cut to the hours the published forecasts cover, and their forecaster."""
    if len(series) != 1:
        raise KapellError("--grid-forecast forecasts one region: give one --intensity file")
    grid = load_grid(folder)
    start = max(series[0].start_h, grid.start_h)
    end = min(series[0].end_h, grid.start_h + len(grid.load_mw))
    if end <= start:
        raise KapellError(f"{folder}: the grid forecasts share no hours with the intensity file")
    cut = series[0].values[start - series[0].start_h : end - series[0].start_h]
    return HourlySeries(series[0].region, start, cut), GridRidge(grid.window(start, end - start))


def _simulate(
    series: Sequence[HourlySeries],
    job_h: int,
    window_h: int,
    forecaster: Forecaster,
    pausable: bool,
    decision: str,
    show_progress: bool,
) -> ShiftResult:
    if not show_progress:
        return simulate_shifting(series, job_h, window_h, forecaster, pausable, decision=decision)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"carbon {forecaster.name}", total=len(series[0].values))
        return simulate_shifting(
            series, job_h, window_h, forecaster, pausable,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            decision=decision,
        )  # fmt: skip


def _compare_with_history(
    series: HourlySeries, forecaster: Forecaster, horizon: int, history: ShiftResult
) -> dict[str, Any]:
    """The history-only ridge's result on the same hours, and both forecasts' error by lead."""
    ridge = SeasonalRidge()
    first = FIRST_ORIGIN + ridge.min_train_days * DAY_H
    errors = {}
    for f in (forecaster, ridge):
        mae = mae_by_lead(series.values, f.matrix(series.values, horizon), first)
        errors[f.name] = [round(float(e), 2) for e in mae]
    return {"history_only": {"forecast": ridge.name, **history.summary()}, "mae_by_lead": errors}


def run_carbon_bench(
    paths: Sequence[Path],
    job_h: int,
    window_h: int,
    pausable: bool,
    forecast: str | None = None,
    signal: str = "lca",
    plot: Path | None = None,
    show_progress: bool = False,
    decision: str = "point",
    grid_forecast: Path | None = None,
) -> dict[str, Any]:
    """The benchmark's JSON answer (and the plot, if asked); ``decision`` as in ``DECISIONS``."""
    series = load_series(paths, signal)
    extra: dict[str, Any] = {}
    forecaster: Forecaster
    if grid_forecast is None:
        forecaster = forecaster_named(forecast or DEFAULT_FORECAST)
    elif forecast is not None:
        raise KapellError("--grid-forecast sets the forecast (grid-ridge); drop --forecast")
    else:
        one, forecaster = _with_grid(series, grid_forecast)
        series = [one]
    result = _simulate(series, job_h, window_h, forecaster, pausable, decision, show_progress)
    if grid_forecast is not None:
        ridge = SeasonalRidge()
        history = _simulate(series, job_h, window_h, ridge, pausable, decision, show_progress)
        extra = _compare_with_history(series[0], forecaster, window_h + job_h, history)
    if plot is not None:
        draw_plot(series, result, job_h, window_h, forecaster.name, plot)
    return {
        **result.summary(),
        "regions": [s.region for s in series],
        "job_hours": job_h,
        "window_hours": window_h,
        "pausable": pausable,
        "forecast": forecaster.name,
        "decision": decision,
        "signal": signal,
        **extra,
    }


def draw_plot(
    series: Sequence[HourlySeries],
    result: ShiftResult,
    job_h: int,
    window_h: int,
    forecast: str,
    path: Path,
) -> None:
    """Two weeks of intensity with chosen start hours, and savings: forecast vs oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_ci, ax_bar) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    hours = min(24 * 14, len(series[0].values))
    for s in series:
        ax_ci.plot(np.arange(hours), s.values[:hours], label=s.region, lw=1)
    by_region = {s.region: s.values for s in series}
    chosen = [
        (r + d, by_region[region][r + d])
        for r, (d, region) in enumerate(
            zip(result.start_delays_h, result.start_regions, strict=True)
        )
        if r + d < hours
    ]
    ax_ci.scatter(*zip(*chosen, strict=True), s=8, c="k", label="chosen start", zorder=3)
    ax_ci.set_xlabel("hour")
    ax_ci.set_ylabel("gCO2eq/kWh")
    ax_ci.set_title(f"{job_h} h job, {window_h} h window: first two weeks")
    ax_ci.legend(fontsize=7)
    ax_bar.bar([forecast, "oracle"], [result.savings_pct, result.oracle_savings_pct])
    ax_bar.set_ylabel("savings vs running at once (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
