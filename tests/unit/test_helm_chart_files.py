"""The Helm chart ships what kapell generates: its CRDs are `kapell crds` (regenerate them with
`make chart-crds`) and its appVersion is kapell's version, the image tag it deploys."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

import kapell
from kapell.api.crd import crd_documents

CHART = Path(__file__).resolve().parents[2] / "deploy/helm/kapell"


def test_the_charts_crds_are_what_kapell_crds_prints() -> None:
    shipped = (CHART / "crds/kapell.dev.yaml").read_text()
    assert shipped == crd_documents(), "the chart's CRDs are stale: run `make chart-crds`"
    assert sorted(CHART.joinpath("crds").iterdir()) == [CHART / "crds/kapell.dev.yaml"]


def test_the_chart_deploys_this_version_of_kapell() -> None:
    chart = YAML(typ="safe").load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == kapell.__version__


def test_the_charts_drift_rules_are_the_shipped_prometheus_rules() -> None:
    shipped = CHART.parents[1] / "prometheus/kapell-drift-rules.yaml"
    copied = CHART / "files/kapell-drift-rules.yaml"
    assert copied.read_text() == shipped.read_text(), "stale: run `make chart-crds`"
