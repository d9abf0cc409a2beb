"""Forecast answers: malformed ones are one-line errors; a plan fits the hours a forecast covers."""

from __future__ import annotations

import numpy as np
import pytest

from kapell.api.errors import KapellError
from kapell.observe.carbon_forecasts import (
    fetch_forecast,
    parse_carbon_aware_sdk_forecast,
    parse_electricity_maps_forecast,
    parse_watttime_forecast,
)
from kapell.policy.carbon.planner import plan_on_forecast
from kapell.policy.carbon.series import HourlySeries


def test_malformed_answers_name_the_service_and_the_missing_part() -> None:
    with pytest.raises(KapellError, match="Electricity Maps forecast answer has no 'forecast'"):
        parse_electricity_maps_forecast({"zone": "DE"})
    with pytest.raises(KapellError, match="Carbon Aware SDK answer holds no forecast for 'x'"):
        parse_carbon_aware_sdk_forecast([{"location": "y", "forecastData": []}], "x")
    with pytest.raises(KapellError, match="usable 'point_time'"):
        parse_watttime_forecast(
            {"data": [{"value": 1}], "meta": {"units": "lbs_co2_per_mwh", "region": "R"}}
        )
    with pytest.raises(KapellError, match="unknown units 'percent'"):
        parse_watttime_forecast({"data": [], "meta": {"units": "percent", "region": "R"}})
    with pytest.raises(KapellError, match="electricity-maps, watttime"):
        fetch_forecast("crystal-ball", "DE", env={})
    with pytest.raises(KapellError, match="give its address with --url"):
        fetch_forecast("carbon-aware-sdk", "westeurope", env={})


def test_the_window_shrinks_to_the_forecast_and_a_late_start_takes_its_first_value() -> None:
    forecast = HourlySeries("DE", 102, np.array([300.0, 50.0, 300.0, 300.0]))
    made = plan_on_forecast(forecast, now_h=100, duration_h=2, window_h=24)
    assert made.job.deadline_h == 106  # 2 lead-in hours + 4 forecast hours
    assert [h for h, _ in made.plan.slots] == [102, 103]
    assert made.at_once_sum == 600.0  # the lead-in hours at the first forecast value
    with pytest.raises(KapellError, match="covers 4 h from now, less than the 5 h job"):
        plan_on_forecast(forecast, now_h=102, duration_h=5, window_h=24)
