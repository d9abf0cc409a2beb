"""``kapell bench carbon``: carbon-aware shifting with a forecast vs the oracle vs running at once.

Reads one or more intensity files (several = spatial plus temporal shifting across their
regions, the first being home), replays a job submitted at every hour, and reports savings
against starting at once, the oracle's savings, their ratio and the share of deadlines met.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kapell.observe.carbon_sources import read_intensity_csv
from kapell.policy.carbon.forecast import forecaster_named
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


def run_carbon_bench(
    paths: Sequence[Path],
    job_h: int,
    window_h: int,
    pausable: bool,
    forecast: str,
    signal: str = "lca",
    plot: Path | None = None,
    show_progress: bool = False,
    decision: str = "point",
) -> dict[str, Any]:
    """The benchmark's JSON answer (and the plot, if asked); ``decision`` as in ``DECISIONS``."""
    series = load_series(paths, signal)
    forecaster = forecaster_named(forecast)
    if show_progress:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"carbon {forecast}", total=len(series[0].values))
            result = simulate_shifting(
                series, job_h, window_h, forecaster, pausable,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                decision=decision,
            )  # fmt: skip
    else:
        result = simulate_shifting(series, job_h, window_h, forecaster, pausable, decision=decision)
    if plot is not None:
        draw_plot(series, result, job_h, window_h, forecast, plot)
    return {
        **result.summary(),
        "regions": [s.region for s in series],
        "job_hours": job_h,
        "window_hours": window_h,
        "pausable": pausable,
        "forecast": forecast,
        "decision": decision,
        "signal": signal,
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
