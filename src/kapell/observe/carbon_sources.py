"""Carbon-intensity readers: CSV files in three published formats, the Carbon Aware SDK, a constant.

Each returns ``CarbonReadings`` (region, timestamps in epoch seconds, gCO2eq/kWh), the plain data
``policy.carbon.series.to_hourly`` puts on the hourly grid.

- Electricity Maps data-portal CSV (``Datetime (UTC),...,Carbon Intensity gCO₂eq/kWh (direct),
  Carbon Intensity gCO₂eq/kWh (LCA),...``): the life-cycle column by default, as Sukprasert et
  al. use; ``signal="direct"`` for combustion only.
- WattTime MOER export as shipped by vessim (``<time column>,<region>``; 5-minute marginal rates).
- Let's Wait Awhile (``Time,Carbon Intensity``; naive timestamps, read as UTC).
- The Carbon Aware SDK's ``GET /emissions/bylocations`` (``[{location, time, rating, duration}]``).
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kapell.api.errors import BackendError, KapellError, NotFoundError

SIGNALS = ("lca", "direct")
_EM_COLUMNS = {
    "lca": "Carbon Intensity gCO₂eq/kWh (LCA)",
    "direct": "Carbon Intensity gCO₂eq/kWh (direct)",
}


@dataclass(frozen=True)
class CarbonReadings:
    """Intensity readings of one region in gCO2eq/kWh, timestamps in epoch seconds (UTC)."""

    region: str
    signal: str
    times_s: tuple[float, ...]
    g_per_kwh: tuple[float, ...]


def epoch_s(text: str) -> float:
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_intensity_csv(text: str, name: str, signal: str = "lca") -> CarbonReadings:
    """Readings from CSV text in any supported format, recognised by its header."""
    if signal not in SIGNALS:
        raise KapellError(f"unknown carbon signal {signal!r}; choose one of {', '.join(SIGNALS)}")
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2:
        raise KapellError(f"{name}: no carbon-intensity rows")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    try:
        if _EM_COLUMNS["lca"] in header:
            col = header.index(_EM_COLUMNS[signal])
            zone = header.index("Zone Id")
            return CarbonReadings(
                body[0][zone],
                signal,
                tuple(epoch_s(r[0]) for r in body),
                tuple(float(r[col]) for r in body),
            )
        if len(header) == 2:
            # Let's Wait Awhile names its value column; WattTime/vessim names it after the region.
            is_lwa = header[1] == "Carbon Intensity"
            region = Path(name).stem if is_lwa else header[1]
            kind = "average" if is_lwa else "marginal"
            return CarbonReadings(
                region,
                kind,
                tuple(epoch_s(r[0]) for r in body),
                tuple(float(r[1]) for r in body),
            )
    except (ValueError, IndexError) as exc:
        raise KapellError(f"{name}: unreadable carbon-intensity row: {exc}") from exc
    raise KapellError(
        f"{name}: unknown carbon-intensity CSV header {header[:3]}...; expected Electricity "
        "Maps, WattTime or Let's Wait Awhile format"
    )


def read_intensity_csv(path: Path, signal: str = "lca") -> CarbonReadings:
    """Readings from a CSV file (see ``parse_intensity_csv``)."""
    if not path.is_file():
        raise NotFoundError(f"{path}: no such carbon-intensity file")
    return parse_intensity_csv(path.read_text(encoding="utf-8"), str(path), signal)


def parse_carbon_aware_sdk(payload: object, location: str) -> CarbonReadings:
    """Readings from a Carbon Aware SDK ``/emissions/bylocations`` JSON answer."""
    if not isinstance(payload, list):
        raise KapellError("Carbon Aware SDK answer is not a JSON list of emissions")
    points = sorted(
        (epoch_s(str(p["time"])), float(p["rating"]))
        for p in payload
        if isinstance(p, dict) and p.get("location", location) == location
    )
    return CarbonReadings(location, "sdk", tuple(t for t, _ in points), tuple(v for _, v in points))


def get_json(url: str, what: str, headers: dict[str, str] | None = None,
             timeout_s: float = 10.0) -> object:  # fmt: skip
    """The JSON answer of ``GET url``; a one-line ``BackendError`` naming ``what`` otherwise."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise BackendError(f"{what} answered HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"{what} did not answer at {url}: {exc}") from exc


def fetch_carbon_aware_sdk(
    base_url: str, location: str, start: datetime, end: datetime, timeout_s: float = 10.0
) -> CarbonReadings:
    """Observed emissions of ``location`` between ``start`` and ``end`` from a Carbon Aware SDK."""
    query = urllib.parse.urlencode(
        {"location": location, "time": start.isoformat(), "toTime": end.isoformat()}
    )
    url = f"{base_url.rstrip('/')}/emissions/bylocations?{query}"
    return parse_carbon_aware_sdk(get_json(url, "Carbon Aware SDK", timeout_s=timeout_s), location)


def constant_intensity(region: str, g_per_kwh: float, times_s: Iterable[float]) -> CarbonReadings:
    """A flat intensity at the given times (for regions without data, or tests)."""
    stamps: Sequence[float] = tuple(times_s)
    return CarbonReadings(region, "constant", tuple(stamps), tuple(g_per_kwh for _ in stamps))
