"""``kapell carbon plan``: when (within a window) to run a job, on a live weather-aware forecast.

The forecast comes from a service (Carbon Aware SDK, Electricity Maps, WattTime; keys from the
environment, see ``observe.carbon_forecasts``); the plan is ``policy.carbon.planner``'s optimum
on it. Run it again each hour to re-plan on the newest forecast (the receding-horizon rule the
benchmark measures).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

carbon_app = typer.Typer(help="Carbon-aware scheduling on live forecasts.", no_args_is_help=True)


@carbon_app.command("plan")
def plan(
    service: Annotated[
        str,
        typer.Option("--service", help="carbon-aware-sdk, electricity-maps or watttime."),
    ],
    region: Annotated[
        str, typer.Option("--region", help="The service's location, zone or region name.")
    ],
    job_hours: Annotated[int, typer.Option("--job-hours", min=1, help="Job length in hours.")],
    window_hours: Annotated[
        int, typer.Option("--window-hours", min=0, help="Hours the job may wait to start.")
    ],
    pausable: Annotated[bool, typer.Option("--pausable", help="The job may pause.")] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="The service's base URL (else its public one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The cheapest hours to run a job in, on the service's current forecast."""
    import time
    from datetime import UTC, datetime

    from kapell.observe.carbon_forecasts import fetch_forecast
    from kapell.policy.carbon.planner import plan_on_forecast
    from kapell.policy.carbon.series import HOUR_S, to_hourly

    readings = fetch_forecast(service, region, url)
    hourly = to_hourly(readings.region, readings.times_s, readings.g_per_kwh)
    now_h = int(time.time() // HOUR_S)
    made = plan_on_forecast(hourly, now_h, job_hours, window_hours, pausable)
    hours = [h for h, _ in made.plan.slots]

    def stamp(hour: int) -> str:
        return datetime.fromtimestamp(hour * HOUR_S, UTC).strftime("%Y-%m-%dT%H:%MZ")

    answer = {
        "service": service,
        "region": readings.region,
        "start": stamp(hours[0]),
        "hours": [stamp(h) for h in hours],
        "wait_hours": hours[0] - now_h,
        "window_hours": made.job.deadline_h - made.job.duration_h - now_h,
        "forecast_g_per_kwh": round(made.plan.intensity_sum / job_hours, 1),
        "at_once_g_per_kwh": round(made.at_once_sum / job_hours, 1),
        "forecast_saving_pct": round(100 * (1 - made.plan.intensity_sum / made.at_once_sum), 1)
        if made.at_once_sum
        else 0.0,
    }
    if as_json:
        typer.echo(json.dumps(answer))
        return
    typer.echo(
        f"{readings.region}: start at {answer['start']} (in {answer['wait_hours']} h): "
        f"{answer['forecast_g_per_kwh']} gCO2/kWh forecast vs {answer['at_once_g_per_kwh']} "
        f"at once ({answer['forecast_saving_pct']}% less); window {answer['window_hours']} h"
    )
