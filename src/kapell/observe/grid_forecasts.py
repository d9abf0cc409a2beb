"""Grid operators' published forecasts (ENTSO-E Transparency Platform exports) as plain data.

A day-ahead forecast is weather-driven (wind and solar come from numerical weather prediction)
and known before the fact, which is what a carbon forecast needs and an intensity history lacks.
Two exports of one bidding zone are read from a folder:

- ``generation_forecast_*.csv``: ``MTU (CET/CEST)``, then ``Generation - Solar [MW] Day Ahead``,
  ``... Wind Offshore ... Day Ahead`` and ``... Wind Onshore ... Day Ahead`` (among intraday and
  current columns, which are not used);
- ``load_*.csv``: ``Time (CET/CEST)``, ``Day-ahead Total Load Forecast [MW]`` and the actual load
  (not used: only what was published the day before enters a forecast).

Times are the market's local time as ``"DD.MM.YYYY HH:MM - DD.MM.YYYY HH:MM"``; in October the
hour of the change back to winter time appears twice (the first one is summer time), in March
the skipped hour has empty rows. Empty and ``n/e`` values are missing.

Publication: a day-ahead value for local day ``D`` may be used from noon (local) of ``D-1``
(ENTSO-E requires publication by 18:00; the auction's inputs are out by noon). Each value carries
that time, so the forecaster can refuse what was not yet published.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from kapell.api.errors import KapellError, NotFoundError

MARKET_TZ = ZoneInfo("Europe/Berlin")  # CET/CEST, the exports' clock
PUBLISHED_AT_HOUR = 12  # local hour of D-1 from which a day-ahead value for day D is usable
_MISSING = {"", "n/e", "N/A", "-"}
_GENERATION_COLUMNS = {
    "solar_mw": ("Solar", "Day Ahead"),
    "wind_offshore_mw": ("Wind Offshore", "Day Ahead"),
    "wind_onshore_mw": ("Wind Onshore", "Day Ahead"),
}


@dataclass(frozen=True)
class GridForecast:
    """Day-ahead forecasts per 15-minute interval, with the time each became public.

    ``times_s`` are interval starts and ``published_s`` publication times, both in epoch
    seconds (UTC); the MW columns are NaN where the export has no value.
    """

    zone: str
    times_s: tuple[float, ...]
    published_s: tuple[float, ...]
    load_mw: tuple[float, ...]
    solar_mw: tuple[float, ...]
    wind_mw: tuple[float, ...]


def _local_starts(rows: list[list[str]], name: str) -> list[datetime]:
    """Aware interval starts; a repeated local start (October) is the second, winter-time one."""
    seen: set[datetime] = set()
    starts = []
    for number, row in enumerate(rows, start=2):
        try:
            naive = datetime.strptime(row[0].split(" - ")[0].strip(), "%d.%m.%Y %H:%M")
        except (ValueError, IndexError) as exc:
            raise KapellError(f"{name}:{number}: time: expected 'DD.MM.YYYY HH:MM - ...'") from exc
        starts.append(naive.replace(tzinfo=MARKET_TZ, fold=1 if naive in seen else 0))
        seen.add(naive)
    return starts


def _number(text: str, name: str, number: int, column: str) -> float:
    if text.strip() in _MISSING:
        return float("nan")
    try:
        return float(text)
    except ValueError as exc:
        raise KapellError(f"{name}:{number}: {column}: expected MW, got {text!r}") from exc


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle) if r]
    if len(rows) < 2:
        raise KapellError(f"{path}: no forecast rows")
    return [h.strip() for h in rows[0]], rows[1:]


def _column(header: list[str], path: Path, *words: str) -> int:
    for i, title in enumerate(header):
        if all(w in title for w in words):
            return i
    raise KapellError(f"{path}:1: header: no column with {' and '.join(map(repr, words))}")


def _published_s(start: datetime) -> float:
    day_before = start.astimezone(MARKET_TZ).date() - timedelta(days=1)
    noon = datetime(day_before.year, day_before.month, day_before.day, PUBLISHED_AT_HOUR,
                    tzinfo=MARKET_TZ)  # fmt: skip
    return noon.timestamp()


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise NotFoundError(f"{folder}: expected one {pattern} file, found {len(found)}")
    return found[0]


def read_entsoe_folder(folder: Path) -> GridForecast:
    """The day-ahead load, solar and wind forecasts in an ENTSO-E export folder."""
    if not folder.is_dir():
        raise NotFoundError(f"{folder}: no such grid-forecast folder")
    gen_path = _only(folder, "generation_forecast_*.csv")
    load_path = _only(folder, "load_*.csv")
    gen_header, gen_rows = _read(gen_path)
    load_header, load_rows = _read(load_path)
    starts = _local_starts(gen_rows, str(gen_path))
    if starts != _local_starts(load_rows, str(load_path)):
        raise KapellError(f"{gen_path} and {load_path} cover different intervals")
    load_col = _column(load_header, load_path, "Day-ahead Total Load Forecast")
    gen_cols = {k: _column(gen_header, gen_path, *w) for k, w in _GENERATION_COLUMNS.items()}
    gen = {
        k: [_number(r[c], str(gen_path), i + 2, gen_header[c]) for i, r in enumerate(gen_rows)]
        for k, c in gen_cols.items()
    }
    load = [
        _number(r[load_col], str(load_path), i + 2, load_header[load_col])
        for i, r in enumerate(load_rows)
    ]
    zone = load_header[load_col].rsplit("BZN|", 1)[-1].strip() or folder.name
    return GridForecast(
        zone=zone,
        times_s=tuple(s.timestamp() for s in starts),
        published_s=tuple(_published_s(s) for s in starts),
        load_mw=tuple(load),
        solar_mw=tuple(gen["solar_mw"]),
        wind_mw=tuple(np.add(gen["wind_offshore_mw"], gen["wind_onshore_mw"]).tolist()),
    )
