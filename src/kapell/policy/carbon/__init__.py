"""Carbon-aware shifting: hourly intensity series, forecasts without peeking, and a planner.

``series`` puts readings on one hourly grid, ``forecast`` predicts the next hours from the past
only, ``planner`` chooses the hours (and region) a deferrable job runs in, and ``simulate`` replays
every submission of a series against the running-at-once baseline and the perfect-foresight
oracle of Sukprasert et al. (EuroSys 2024).
"""
