"""The e2e suite's cluster: one real control plane per session, with fake GPU nodes.

Six nodes. The first two are serving nodes, whose pods kapell's node agent runs as real
processes (label ``kapell.dev/serving-node=true``): one with eight whole H100s, one with two
A100s split into 1g.10gb MIG devices. The other four are kwok's (label ``type=kwok``): three
with eight whole H100s, one with the MIG A100s. Each test works in its own namespace. The ecosystem CRDs are installed only for the tests that
ask for them (``ecosystem_crds``). Binaries come from ``make k8s-bin``; a missing one fails the
session with that hint rather than skipping, because `make e2e` is meant to prove something.

``KAPELL_E2E_CLUSTER=STATE_DIR`` runs the tests against a dev cluster already up there
(`kapell dev cluster up --state-dir STATE_DIR`), left running afterwards: for tests that need no
serving nodes (the InferencePool and Helm chart tests), next to other runs on one machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubeobjects import eventually
from lightkube import ApiError, Client, KubeConfig
from lightkube.resources.core_v1 import Namespace, ServiceAccount
from operators import OperatorProcess

from kapell.devcluster import DevCluster, GpuPool, find_bin_dir
from kapell.net import free_port

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = REPO / ".kapell/e2e-cluster"  # fixed, so a run killed mid-way is cleaned by the next
CRDS_DIR = REPO / "../shared/data/crds"
NODES = 6
SERVING_NODES = 2  # the first two of the plan: gpu-node-0000 (8 H100), gpu-node-0001 (MIG A100)
POOLS = ("h100:8", "a100:2:1g.10gb", "h100:8", "h100:8")  # kwok: three H100 nodes, one MIG


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(900))  # the first test also starts the cluster


OPERATOR_LOG_TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that ran the operator reports the tail of its log (CI keeps only the
    output's end, and the log's temporary directory is gone by the time anyone looks)."""
    outcome = yield
    report = outcome.get_result()
    operator = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(operator, OperatorProcess) and operator.log.is_file():
        tail = operator.text().splitlines()[-OPERATOR_LOG_TAIL_LINES:]
        report.sections.append(("operator log, last lines", "\n".join(tail)))


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    running = os.environ.get("KAPELL_E2E_CLUSTER")
    if running:
        cluster = DevCluster(Path(running), find_bin_dir())
        if not cluster.kubeconfig.is_file():
            pytest.fail(f"KAPELL_E2E_CLUSTER={running}: no dev cluster there (no kubeconfig)")
        yield cluster
        return
    cluster = DevCluster(STATE_DIR, find_bin_dir())
    cluster.down()  # left over from a run that was killed before its teardown
    cluster.up(NODES, [GpuPool.parse(p) for p in POOLS], serving_nodes=SERVING_NODES)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kube(dev_cluster: DevCluster) -> Client:
    return Client(KubeConfig.from_file(dev_cluster.kubeconfig), field_manager="kapell-e2e")


@pytest.fixture
def namespace(kube: Client) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata={"name": name}))  # type: ignore[arg-type]

    def default_account() -> ServiceAccount | None:  # pods are refused until it exists
        try:
            return kube.get(ServiceAccount, "default", namespace=name)
        except ApiError:
            return None

    eventually(default_account, f"ServiceAccount {name}/default")
    yield name
    kube.delete(Namespace, name)


@pytest.fixture(scope="session")
def kubectl(dev_cluster: DevCluster) -> Callable[..., str]:
    """Run the built kubectl against the cluster; returns stdout, raises with stderr on failure."""
    binary = find_bin_dir() / "kubectl"

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(binary), f"--kubeconfig={dev_cluster.kubeconfig}", *args],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    return run


@pytest.fixture(scope="session")
def ecosystem_crds(kubectl: Callable[..., str]) -> list[str]:
    """Install every CRD under shared/data/crds; returns their names once all are Established."""
    files = sorted(CRDS_DIR.resolve().rglob("*.yaml"))
    assert files, f"no CRDs found under {CRDS_DIR}"
    args = [arg for f in files for arg in ("-f", str(f))]
    kubectl("apply", "--server-side", *args)
    names = kubectl("get", *args, "-o", "name").split()
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


@pytest.fixture(scope="session")
def kapell_crds(kubectl: Callable[..., str]) -> str:
    """Install the CRDs that `kapell crds` prints, exactly as a user would pipe them."""
    kapell = Path(sys.executable).with_name("kapell")
    crds = subprocess.run(
        [str(kapell), "crds"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    kubectl("apply", "--server-side", "-f", "-", stdin=crds)
    names = kubectl("get", "-f", "-", "-o", "name", stdin=crds).split()
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return crds


@pytest.fixture(scope="session")
def operator(
    dev_cluster: DevCluster, kapell_crds: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One `kapell operator` process for the session (tests that kill it start it again)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(dev_cluster.kubeconfig, log, "op-main", port=free_port()).start()
    process.wait_watching()
    yield process
    process.kill(signal.SIGTERM)
