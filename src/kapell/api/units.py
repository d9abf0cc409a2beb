"""Kubernetes-style durations ("100ms", "5m", "1h30m") and quantities ("2Gi", "500m").

Specs keep the user's string (so `kapell get` shows what was written and the CRD schema is a
plain string with a pattern); code reads seconds and base units through these parsers.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

QUANTITY_PATTERN = r"^\d+(\.\d+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
}


def parse_duration(text: str) -> float:
    """Seconds in a duration string such as ``"1h30m"`` or ``"250ms"``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. '30s', '5m', '1h30m', '250ms'")
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(text))


def parse_quantity(text: str) -> float:
    """The value of a Kubernetes quantity in base units (cores, bytes)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text)
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"invalid quantity {text!r}: expected e.g. '2', '500m', '16Gi'")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _duration(value: object) -> object:
    if isinstance(value, str):
        parse_duration(value)
    return value


def _quantity(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        value = repr(value)
    if isinstance(value, str):
        parse_quantity(value)
    return value


Duration = Annotated[
    str,
    BeforeValidator(_duration),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
    Field(examples=["30s", "5m", "250ms"]),
]
"""A duration string, validated on load."""

Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            # Kubernetes accepts exactly this anyOf beside int-or-string; the pattern (which
            # applies to strings only) goes beside it.
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
"""A Kubernetes quantity; numbers are accepted and kept as strings."""
