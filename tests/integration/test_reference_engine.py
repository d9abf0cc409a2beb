"""The reference engine as a real process on a loopback port, called with the official client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip(
    "torch", reason="the reference engine needs torch (pip install kapell[reference])"
)
pytest.importorskip("transformers", reason="the reference engine needs transformers")

from tests.integration.engine_cases import EngineServerCases, serve_engine

pytestmark = [pytest.mark.reference, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    yield from serve_engine("reference")


class TestReferenceEngine(EngineServerCases):
    engine = "reference"
    fingerprint_prefix = "kapell-reference-transformers-"
