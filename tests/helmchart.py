"""The Helm chart in deploy/helm/kapell, rendered by the helm that `make k8s-bin` builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy/helm/kapell"
BUILD_HINT = "build it with `make k8s-bin` (or `hack/k8s/build.sh helm`)"


def helm_binary() -> Path:
    """helm beside the control plane's binaries: $KAPELL_K8S_BIN or the checkout's k8s-bin/."""
    return Path(os.environ.get("KAPELL_K8S_BIN") or REPO / "k8s-bin") / "helm"


def helm(*args: str) -> str:
    """Run helm; stdout, or AssertionError with its stderr."""
    done = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def render(release: str, namespace: str, *options: str) -> list[dict[str, Any]]:
    """`helm template` of the chart: every object, in the order helm prints them."""
    text = helm("template", release, str(CHART), "--namespace", namespace, *options)
    return [doc for doc in YAML(typ="safe").load_all(text) if doc]
