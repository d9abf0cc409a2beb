"""Live carbon-intensity forecasts from the services that make them from the weather.

Each service answers with the coming hours, not history, so its answer can go straight to the
planner (``policy.carbon.planner.plan_on_forecast``). Answers become ``CarbonReadings`` with
``signal = "forecast"``, in gCO2eq/kWh at UTC epoch seconds.

- Carbon Aware SDK (self-hosted WebAPI): ``GET {url}/emissions/forecasts/current?location=L``
  answers ``[{"location", "generatedAt", "forecastData": [{"timestamp", "duration", "value"}],
  ...}]``. The SDK holds the upstream provider's key, so the caller sends none.
- Electricity Maps v3: ``GET {url}/carbon-intensity/forecast?zone=Z`` with header
  ``auth-token: $ELECTRICITYMAPS_API_KEY`` answers ``{"zone", "forecast": [{"carbonIntensity",
  "datetime"}], "updatedAt"}``.
- WattTime v3: ``GET {url}/login`` with HTTP Basic ``$WATTTIME_USER:$WATTTIME_PASSWORD`` gives
  ``{"token"}``; ``GET {url}/v3/forecast?region=R&signal_type=co2_moer`` with ``Authorization:
  Bearer`` answers ``{"data": [{"point_time", "value"}], "meta": {"units": "lbs_co2_per_mwh",
  "region", ...}}``. A marginal rate in lb/MWh, converted here (1 lb/MWh = 0.453592 g/kWh).

The formats are the services' documented response shapes as of 2025-2026 (Carbon Aware SDK
WebAPI ``EmissionsForecastDTO``, Electricity Maps API v3 reference, WattTime API v3 OpenAPI).
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kapell.api.errors import KapellError
from kapell.observe.carbon_sources import CarbonReadings, epoch_s, get_json

G_PER_KWH_PER_LB_PER_MWH = 0.45359237
WATTTIME_UNITS = {"lbs_co2_per_mwh": G_PER_KWH_PER_LB_PER_MWH}


def _points(
    rows: object, time_key: str, value_key: str, service: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not isinstance(rows, list) or not rows:
        raise KapellError(f"{service} forecast has no points")
    try:
        points = sorted((epoch_s(str(p[time_key])), float(p[value_key])) for p in rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise KapellError(
            f"{service} forecast point without a usable {time_key!r} and {value_key!r}: {exc}"
        ) from exc
    return tuple(t for t, _ in points), tuple(v for _, v in points)


def _field(payload: object, key: str, service: str) -> object:
    if not isinstance(payload, dict) or key not in payload:
        raise KapellError(f"{service} forecast answer has no {key!r} field")
    return payload[key]


def parse_carbon_aware_sdk_forecast(payload: object, location: str) -> CarbonReadings:
    """Readings from a Carbon Aware SDK ``/emissions/forecasts/current`` answer."""
    service = "Carbon Aware SDK"
    if not isinstance(payload, list):
        raise KapellError(f"{service} forecast answer is not a JSON list")
    mine = [f for f in payload if isinstance(f, dict) and f.get("location", location) == location]
    if not mine:
        raise KapellError(f"{service} answer holds no forecast for {location!r}")
    rows = _field(mine[0], "forecastData", service)
    times, values = _points(rows, "timestamp", "value", service)
    return CarbonReadings(location, "forecast", times, values)


def parse_electricity_maps_forecast(payload: object) -> CarbonReadings:
    """Readings from an Electricity Maps ``/v3/carbon-intensity/forecast`` answer."""
    service = "Electricity Maps"
    zone = str(_field(payload, "zone", service))
    rows = _field(payload, "forecast", service)
    times, values = _points(rows, "datetime", "carbonIntensity", service)
    return CarbonReadings(zone, "forecast", times, values)


def parse_watttime_forecast(payload: object) -> CarbonReadings:
    """Readings in g/kWh from a WattTime ``/v3/forecast`` answer (lb/MWh)."""
    service = "WattTime"
    meta = _field(payload, "meta", service)
    units = str(_field(meta, "units", service))
    if units not in WATTTIME_UNITS:
        raise KapellError(
            f"{service} forecast in unknown units {units!r}; expected lbs_co2_per_mwh"
        )
    times, values = _points(_field(payload, "data", service), "point_time", "value", service)
    scale = WATTTIME_UNITS[units]
    region = str(_field(meta, "region", service))
    return CarbonReadings(region, "forecast", times, tuple(v * scale for v in values))


def _need(env: Mapping[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise KapellError(f"set {' and '.join(missing)} to use this forecast service")
    return [env[n] for n in names]


def _carbon_aware_sdk(url: str, region: str, env: Mapping[str, str]) -> CarbonReadings:
    query = urllib.parse.urlencode({"location": region})
    payload = get_json(f"{url}/emissions/forecasts/current?{query}", "Carbon Aware SDK")
    return parse_carbon_aware_sdk_forecast(payload, region)


def _electricity_maps(url: str, region: str, env: Mapping[str, str]) -> CarbonReadings:
    (key,) = _need(env, "ELECTRICITYMAPS_API_KEY")
    query = urllib.parse.urlencode({"zone": region})
    payload = get_json(f"{url}/carbon-intensity/forecast?{query}", "Electricity Maps",
                       {"auth-token": key})  # fmt: skip
    return parse_electricity_maps_forecast(payload)


def _watttime(url: str, region: str, env: Mapping[str, str]) -> CarbonReadings:
    user, password = _need(env, "WATTTIME_USER", "WATTTIME_PASSWORD")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    login = get_json(f"{url}/login", "WattTime login", {"Authorization": f"Basic {basic}"})
    token = _field(login, "token", "WattTime login")
    query = urllib.parse.urlencode({"region": region, "signal_type": "co2_moer"})
    payload = get_json(f"{url}/v3/forecast?{query}", "WattTime",
                       {"Authorization": f"Bearer {token}"})  # fmt: skip
    return parse_watttime_forecast(payload)


@dataclass(frozen=True)
class ForecastService:
    """A live forecast service: its public address (if it has one) and how to ask it."""

    default_url: str | None
    fetch: Callable[[str, str, Mapping[str, str]], CarbonReadings]


SERVICES: dict[str, ForecastService] = {
    "carbon-aware-sdk": ForecastService(None, _carbon_aware_sdk),
    "electricity-maps": ForecastService("https://api.electricitymap.org/v3", _electricity_maps),
    "watttime": ForecastService("https://api.watttime.org", _watttime),
}


def fetch_forecast(
    service: str, region: str, url: str | None = None, env: Mapping[str, str] | None = None
) -> CarbonReadings:
    """The current forecast of ``region`` from ``service``; keys come from ``env`` (os.environ)."""
    if service not in SERVICES:
        raise KapellError(f"unknown forecast service {service!r}; choose one of "
                          f"{', '.join(SERVICES)}")  # fmt: skip
    chosen = SERVICES[service]
    base = url or chosen.default_url
    if base is None:
        raise KapellError(f"{service} is self-hosted: give its address with --url")
    return chosen.fetch(base.rstrip("/"), region, os.environ if env is None else env)
