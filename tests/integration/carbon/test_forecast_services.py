"""``kapell carbon plan`` against local stubs of the three forecast services, on real sockets.

Each stub answers in its service's documented response format (see
``kapell.observe.carbon_forecasts``) and refuses a request without the right credentials, so a
passing test shows the request a user's key makes and the plan kapell draws from the answer.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from kapell.cli.main import app

from .stub_http import serve

HOUR_S = 3600
CLEAN_IN_H = 5  # the stub forecasts' cleanest hour, counted from the current hour


def _hours() -> list[tuple[str, float]]:
    """30 hours from the current one; every hour 400 g/kWh except a clean one."""
    now_h = int(time.time() // HOUR_S)
    return [
        (datetime.fromtimestamp((now_h + i) * HOUR_S, UTC).isoformat(),
         100.0 if i == CLEAN_IN_H else 400.0)
        for i in range(30)
    ]  # fmt: skip


def _carbon_aware_sdk(path: str, query: dict[str, list[str]], headers: dict[str, str]):
    if path != "/emissions/forecasts/current" or query.get("location") != ["westeurope"]:
        return 404, {"title": "not found"}
    data = [{"location": "westeurope", "timestamp": t, "duration": 60, "value": v}
            for t, v in _hours()]  # fmt: skip
    return 200, [{"generatedAt": data[0]["timestamp"], "requestedAt": data[0]["timestamp"],
                  "location": "westeurope", "dataStartAt": data[0]["timestamp"],
                  "dataEndAt": data[-1]["timestamp"], "windowSize": 0,
                  "optimalDataPoints": [data[CLEAN_IN_H]], "forecastData": data}]  # fmt: skip


def _electricity_maps(path: str, query: dict[str, list[str]], headers: dict[str, str]):
    if headers.get("auth-token") != "em-key":
        return 401, {"error": "Invalid auth-token"}
    if path != "/v3/carbon-intensity/forecast" or query.get("zone") != ["DE"]:
        return 404, {"error": "not found"}
    forecast = [{"carbonIntensity": v, "datetime": t.replace("+00:00", ".000Z")}
                for t, v in _hours()]  # fmt: skip
    return 200, {"zone": "DE", "forecast": forecast, "updatedAt": forecast[0]["datetime"]}


def _watttime(path: str, query: dict[str, list[str]], headers: dict[str, str]):
    basic = "Basic " + base64.b64encode(b"ada:secret").decode()
    if path == "/login":
        return (200, {"token": "wt-token"}) if headers.get("authorization") == basic else (
            403, {"error": "bad credentials"})  # fmt: skip
    if headers.get("authorization") != "Bearer wt-token":
        return 401, {"error": "no token"}
    if path != "/v3/forecast" or query.get("region") != ["CAISO_NORTH"]:
        return 404, {"error": "not found"}
    lbs_per_mwh = 1 / 0.45359237
    data = [{"point_time": t, "value": v * lbs_per_mwh} for t, v in _hours()]
    meta = {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh",
            "data_point_period_seconds": 3600, "generated_at": data[0]["point_time"],
            "model": {"date": "2024-10-01"}}  # fmt: skip
    return 200, {"data": data, "meta": meta}


@pytest.fixture(params=["carbon-aware-sdk", "electricity-maps", "watttime"])
def service(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """(service, region, stub URL, environment with the credentials it takes)."""
    cases = {
        "carbon-aware-sdk": (_carbon_aware_sdk, "westeurope", "", {}),
        "electricity-maps": (_electricity_maps, "DE", "/v3", {"ELECTRICITYMAPS_API_KEY": "em-key"}),
        "watttime": (_watttime, "CAISO_NORTH", "",
                     {"WATTTIME_USER": "ada", "WATTTIME_PASSWORD": "secret"}),
    }  # fmt: skip
    answer, region, prefix, env = cases[request.param]
    with serve(answer) as base:
        yield request.param, region, base + prefix, env


def _args(name: str, region: str, url: str) -> list[str]:
    return ["carbon", "plan", "--service", name, "--region", region, "--url", url,
            "--job-hours", "1", "--window-hours", "24"]  # fmt: skip


def test_each_service_forecast_gives_the_plan_its_clean_hour(
    service: tuple[str, str, str, dict[str, str]],
) -> None:
    name, region, url, env = service
    result = CliRunner().invoke(app, [*_args(name, region, url), "--json"], env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["region"] == region
    assert answer["wait_hours"] == CLEAN_IN_H
    assert answer["forecast_g_per_kwh"] == pytest.approx(100.0, abs=0.1)  # lb/MWh converted
    assert answer["at_once_g_per_kwh"] == pytest.approx(400.0, abs=0.1)
    assert answer["forecast_saving_pct"] == pytest.approx(75.0, abs=0.1)


@pytest.mark.parametrize("service", ["electricity-maps", "watttime"], indirect=True)
@pytest.mark.parametrize("wrong", ["missing", "bad"])
def test_missing_or_wrong_credentials_are_one_line_errors(
    service: tuple[str, str, str, dict[str, str]], wrong: str
) -> None:
    """(The Carbon Aware SDK takes no key: the self-hosted SDK holds the upstream one.)"""
    name, region, url, env = service
    creds = {k: "" if wrong == "missing" else "nope" for k in env}
    result = subprocess.run(
        [sys.executable, "-m", "kapell.cli", *_args(name, region, url)],
        env=os.environ | creds, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    expected = "set " if wrong == "missing" else "HTTP 40"
    assert expected in lines[0]
