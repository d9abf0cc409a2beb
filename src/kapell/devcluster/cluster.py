"""Start and stop a real Kubernetes control plane as host processes, on loopback only.

etcd, kube-apiserver (client-certificate auth, RBAC, DRA on), kube-controller-manager,
kube-scheduler and kwok run from the binaries ``make k8s-bin`` builds; everything else the
cluster holds (kubeconfigs, certificates, etcd data, logs) lives in one state directory, so two
clusters with two state directories never meet. ``up`` waits until the cluster can schedule:
every node Ready, the scheduler and controller-manager healthy, the ``default`` ServiceAccount
made. A failed ``up`` stops what it started.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kapell.api.errors import BackendError, ConflictError, KapellError, NotFoundError
from kapell.devcluster import agentstate, driver, nodeheart, podnet
from kapell.devcluster.gpus import FAKE_NODE_ANNOTATION, GpuPool, node_name, plan_nodes
from kapell.devcluster.pki import CertPair, Pki
from kapell.devcluster.processes import ProcessGroup

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
DEFAULT_STATE_DIR = Path(".kapell/dev-cluster")
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.64.0.0/12"
READY_TIMEOUT_S = 240.0
KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
# How old a node's Lease may get before kube-controller-manager marks the node NotReady. kwok
# renews every kwok node's Lease from one process: 1,000 nodes at this default are 100 Lease
# writes a second, which a loaded 2-core machine cannot always keep up, and a node marked
# NotReady has all its pods marked not Ready. Large fake clusters ask for a longer grace.
NODE_GRACE_S = 25

Progress = Callable[[str], None]


def _repo_bin_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "k8s-bin"


def find_bin_dir(explicit: Path | None = None) -> Path:
    """Where the built binaries are: the argument, $KAPELL_K8S_BIN, or the checkout's k8s-bin/."""
    env = os.environ.get("KAPELL_K8S_BIN")
    candidates = [explicit] if explicit else [Path(env)] if env else [_repo_bin_dir()]
    for directory in candidates:
        missing = [b for b in BINARIES if not (directory / b).is_file()]
        if not missing:
            return directory.resolve()
    raise NotFoundError(
        f"Kubernetes binaries missing in {candidates[0]} ({', '.join(missing)}); "
        "build them with `make k8s-bin` or point --bin-dir / KAPELL_K8S_BIN at them"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, user: CertPair) -> Path:
    """A kubeconfig with everything embedded, so it can be copied anywhere. JSON is valid YAML."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kapell-dev", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": "user", "user": {"client-certificate-data": _b64(user.cert), "client-key-data": _b64(user.key)}}],
        "contexts": [{"name": "kapell-dev", "context": {"cluster": "kapell-dev", "user": "user"}}],
        "current-context": "kapell-dev",
    }  # fmt: skip
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*(_free_port() for _ in range(5)))


@dataclass(frozen=True)
class UpResult:
    kubeconfig: Path
    nodes: int
    devices: int
    ready_s: float
    serving_nodes: tuple[str, ...] = ()


class DevCluster:
    """One dev cluster, identified by its state directory."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, bin_dir: Path | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self._bin_dir = bin_dir
        self.processes = ProcessGroup(self.state_dir)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def up(
        self,
        nodes: int,
        pools: list[GpuPool],
        progress: Progress = lambda _: None,
        serving_nodes: int = 0,
        node_grace_s: int = NODE_GRACE_S,
    ) -> UpResult:
        """Start everything, publish the fake GPU nodes, and return once pods can be scheduled.

        The first ``serving_nodes`` nodes get kapell's node agent instead of kwok: their pods
        really run (see ``agent``). A node whose Lease is ``node_grace_s`` old is NotReady."""
        plan = plan_nodes(nodes, pools)
        if not 0 <= serving_nodes <= nodes:
            raise KapellError(f"--serving-nodes {serving_nodes}: expected 0 to --nodes ({nodes})")
        if node_grace_s < NODE_GRACE_S:
            raise KapellError(
                f"--node-grace {node_grace_s}: expected at least {NODE_GRACE_S} s "
                f"(the node agent renews its Leases every {nodeheart.RENEW_S:.0f} s)"
            )
        why_not = podnet.can_manage() if serving_nodes else None
        if why_not:
            raise KapellError(f"--serving-nodes: {why_not}")
        serving = tuple(node_name(index) for index, _ in plan[:serving_nodes])
        bins = find_bin_dir(self._bin_dir)
        if self.processes.load():
            raise ConflictError(
                f"a dev cluster already runs from {self.state_dir}; stop it with `kapell dev cluster down`"
            )
        started_s = time.monotonic()
        self._clear_state()
        try:
            devices = self._start(bins, plan, serving, node_grace_s, progress)
        except BaseException:
            self.down()
            raise
        return UpResult(self.kubeconfig, nodes, devices, time.monotonic() - started_s, serving)

    def _clear_state(self) -> None:
        """Remove what a previous ``up`` left, and only that: the state dir may be user-chosen."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        agentstate.clean_up(self.state_dir)  # pods of an agent that was killed
        for name in ("etcd", "pki", "kubeconfigs", "logs", "apiserver-certs", "pod-credentials"):
            shutil.rmtree(self.state_dir / name, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)

    def down(self) -> list[str]:
        """Stop every process of this cluster, and whatever the node agent's pods left behind
        if it could not stop them itself; returns the names of the processes that were running."""
        stopped = self.processes.stop_all()
        agentstate.clean_up(self.state_dir)
        return stopped

    def _start(
        self,
        bins: Path,
        plan: list[tuple[int, GpuPool]],
        agent_nodes: tuple[str, ...],
        node_grace_s: int,
        progress: Progress,
    ) -> int:
        pki = Pki(self.state_dir / "pki", dt.datetime.now(dt.UTC))
        serving, sa = pki.serving(), pki.service_account_key()
        ports = Ports.pick()
        server = f"https://127.0.0.1:{ports.apiserver}"
        configs = self.state_dir / "kubeconfigs"
        configs.mkdir()

        def kubeconfig_for(user: str, group: str | None) -> str:
            path = configs / f"{user.replace(':', '-')}.kubeconfig"
            return str(write_kubeconfig(path, server, pki.ca.cert, pki.client(user, group)))

        admin = pki.client("kapell-admin", "system:masters")
        write_kubeconfig(self.kubeconfig, server, pki.ca.cert, admin)
        tls = [f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}"]

        progress("starting etcd")
        etcd_url = f"http://127.0.0.1:{ports.etcd_client}"
        peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
        self.processes.start("etcd", [
            str(bins / "etcd"), "--name=kapell", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kapell={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
            "--quota-backend-bytes=8589934592",
        ])  # fmt: skip
        self._wait("etcd", lambda: _http_ok(f"{etcd_url}/health", None))

        progress("starting kube-apiserver")
        self.processes.start("kube-apiserver", [
            str(bins / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}", *tls, f"--client-ca-file={pki.ca.cert}",
            "--authorization-mode=RBAC", "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}", "--profiling=false",
            "--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
            # ConfigMaps served from etcd, not the watch cache: an e2e test compacts etcd to
            # prove informers relist on 410 Gone (nothing of kapell's watches ConfigMaps).
            "--watch-cache-sizes=configmaps#0",
        ])  # fmt: skip
        context = _tls_context(pki.ca.cert, admin)
        self._wait("kube-apiserver", lambda: _http_ok(f"{server}/readyz", context))

        progress("starting kube-controller-manager, kube-scheduler and kwok")
        cm_config = kubeconfig_for("system:kube-controller-manager", None)
        self.processes.start("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={cm_config}",
            f"--authentication-kubeconfig={cm_config}", f"--authorization-kubeconfig={cm_config}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}", *tls,
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa.key}", f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}", f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", f"--cluster-cidr={POD_CIDR}",
            "--kube-api-qps=200", "--kube-api-burst=400",
            # A node silent for 25 s is NotReady by default here (Kubernetes' default is 50 s):
            # kubelets and the node agent renew every 10 s, and a test of a lost node should
            # not wait a minute. Clusters of many kwok nodes ask for more (see NODE_GRACE_S).
            f"--node-monitor-grace-period={node_grace_s}s",
        ])  # fmt: skip
        scheduler_config = kubeconfig_for("system:kube-scheduler", None)
        self.processes.start("kube-scheduler", [
            str(bins / "kube-scheduler"), f"--kubeconfig={scheduler_config}",
            f"--authentication-kubeconfig={scheduler_config}",
            f"--authorization-kubeconfig={scheduler_config}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}", *tls,
        ])  # fmt: skip
        self.processes.start("kwok", [
            str(bins / "kwok"), f"--kubeconfig={kubeconfig_for('kapell-kwok', 'system:masters')}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1",
            # kwok renews a Lease every quarter of its duration: 2.5 renewals per grace period.
            f"--node-lease-duration-seconds={node_grace_s * 8 // 5}",
            f"--config={KWOK_STAGES}",
        ])  # fmt: skip

        progress(f"publishing {len(plan)} fake GPU nodes and their ResourceSlices")
        devices = driver.publish(self.kubeconfig, plan, len(agent_nodes))
        if agent_nodes:
            progress(f"starting the node agent for {len(agent_nodes)} serving nodes")
            self.processes.start("node-agent", [
                sys.executable, "-m", "kapell.devcluster.agent",
                f"--kubeconfig={kubeconfig_for('kapell-node-agent', 'system:masters')}",
                f"--state-dir={self.state_dir}", f"--nodes={','.join(agent_nodes)}",
            ])  # fmt: skip

        progress("waiting until every node is Ready and the scheduler is healthy")
        probe = ssl.create_default_context(cafile=str(pki.ca.cert))
        self._wait("kube-scheduler", lambda: _healthy(ports.scheduler, probe))
        self._wait("kube-controller-manager", lambda: _healthy(ports.controller_manager, probe))
        self._wait("nodes", lambda: driver.ready_nodes(self.kubeconfig) >= len(plan))
        self._wait(
            "default ServiceAccount", lambda: driver.has_default_service_account(self.kubeconfig)
        )
        return devices

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision (as the apiserver does every 5 minutes);
        returns that revision. Watches from an older resourceVersion then get 410 Gone."""
        [etcd] = [p for p in self.processes.load() if p.name == "etcd"]
        argv = Path(f"/proc/{etcd.pid}/cmdline").read_bytes().decode().split("\0")
        url = next(a.split("=", 1)[1] for a in argv if a.startswith("--listen-client-urls="))

        def post(path: str, body: dict[str, object]) -> dict[str, Any]:
            request = urllib.request.Request(
                url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                answer: dict[str, Any] = json.load(response)
                return answer

        revision = int(post("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _wait(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.processes.check_running()
            if check():
                return
            time.sleep(0.2)
        raise BackendError(
            f"{what} not ready after {READY_TIMEOUT_S:.0f} s; logs in {self.processes.logs}"
        )


def _tls_context(ca: Path, client: CertPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _healthy(port: int, context: ssl.SSLContext) -> bool:
    return _http_ok(f"https://127.0.0.1:{port}/healthz", context)


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
