"""``kapell operator``: the controllers of ``kapell up``, run against a Kubernetes cluster.

The same ``ModelController``, ``PolicyScaler`` and ``ReconcileLoop`` as the local mode, over the
Kubernetes store (Model custom resources) and replica backend (Pods with pinned ResourceClaims).
Only the Lease holder starts its informers and reconciles; a leader that loses the Lease exits,
and whatever supervises it (a Deployment, a test) starts it again as a candidate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console

if TYPE_CHECKING:
    from lightkube import Client

    from kapell.cli.operator_training import GangChoice
    from kapell.control.training_schedule import Feeds

console = Console(stderr=True, highlight=False)
SYNC_TIMEOUT_S = 120.0
PAUSED_RETRY_S = 1.0
EVENT_DRIVEN_PROGRESS_S = 5.0
EVENT_DRIVEN_RESYNC_S = 10.0


def operator(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="Cluster to manage (default: $KUBECONFIG, ~/.kube/config, in-cluster).",
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Manage Models in this namespace only.")
    ] = None,
    all_namespaces: Annotated[
        bool,
        typer.Option(
            "--all-namespaces", "-A", help="Manage Models in every namespace (the default)."
        ),
    ] = False,
    identity: Annotated[
        str | None,
        typer.Option("--identity", help="This candidate's name in the Lease (default: host-pid)."),
    ] = None,
    lease_namespace: Annotated[
        str, typer.Option("--lease-namespace", help="Namespace of the leader-election Lease.")
    ] = "kube-system",
    lease_duration: Annotated[
        int,
        typer.Option("--lease-duration", min=2, help="Seconds a silent leader keeps the Lease."),
    ] = 15,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            help="HTTP port for probes (/healthz, /readyz), /metrics and the gateways' demand "
            "reports (0: none; gateways then cannot scale Models).",
        ),
    ] = 8090,
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on (0.0.0.0 in a pod).")
    ] = "127.0.0.1",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every watch event.")
    ] = False,
    training_gang: Annotated[
        str,
        typer.Option(
            "--training-gang",
            help="Gang admission of TrainingJobs' RayJobs: auto (Kueue where its CRDs are "
            "installed, else none), kueue, volcano or none.",
        ),
    ] = "auto",
    spot_availability: Annotated[
        Path | None,
        typer.Option(
            "--spot-availability",
            help="Spot availability for TrainingJobs with a deadline and spot workers, as "
            "`kapell up` reads it (a `kapell bench spot` trace replayed from now, or a file "
            "reading 'up' or 'down'). Default: up while a Ready node of a GPUPool's spot "
            "node group exists.",
        ),
    ] = None,
    carbon_intensity: Annotated[
        str | None,
        typer.Option(
            "--carbon-intensity",
            help="gCO2eq/kWh that deferrable TrainingJobs plan their start on: a number, or an "
            "intensity CSV file covering their windows. Default: none (nothing is deferred).",
        ),
    ] = None,
) -> None:
    """Run kapell's controllers over a Kubernetes cluster until Ctrl-C."""
    from kapell.api.errors import KapellError

    if namespace and all_namespaces:
        raise KapellError("give --namespace or --all-namespaces, not both")
    if training_gang not in ("auto", "kueue", "volcano", "none"):
        raise KapellError(
            f"--training-gang {training_gang!r}: expected auto, kueue, volcano or none"
        )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore"):  # one line per API request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    me = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    from kapell.cli.training_feeds import intensity_series
    from kapell.cli.training_feeds import spot_availability as spot_source
    from kapell.control.training_schedule import Feeds

    feeds = Feeds(
        spot_available=spot_source(spot_availability, time.time()) if spot_availability else None,
        carbon=intensity_series(carbon_intensity),
    )
    asyncio.run(
        _run(
            kubeconfig, namespace, me, lease_namespace, lease_duration, host, port,
            cast("GangChoice", training_gang), feeds,
        )
    )  # fmt: skip


def kube_client(kubeconfig: Path | None) -> Client:
    from lightkube import Client, KubeConfig

    from kapell.backends.kubernetes.store import FIELD_MANAGER

    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return Client(config, field_manager=FIELD_MANAGER)


def _check_crds(client: Client) -> None:
    from lightkube import ApiError
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    from kapell.api.errors import BackendError

    try:
        client.get(CustomResourceDefinition, "models.kapell.dev")
    except ApiError as exc:
        if exc.status.code == 404:
            raise BackendError(
                "the Model CRD is not installed; install it with "
                "`kapell crds | kubectl apply --server-side -f -`"
            ) from None
        raise


async def _run(
    kubeconfig: Path | None,
    namespace: str | None,
    identity: str,
    lease_namespace: str,
    lease_duration: int,
    host: str,
    port: int,
    training_gang: GangChoice,
    feeds: Feeds,
) -> None:
    from kapell.api.model import Model
    from kapell.backends.kubernetes.informer import wait_synced
    from kapell.backends.kubernetes.lease import LeaderElector
    from kapell.backends.kubernetes.replicas import KubeReplicas
    from kapell.backends.kubernetes.store import KubeStore, ModelResource, model_key, parse_model
    from kapell.backends.local.store import utc_now
    from kapell.backends.sim.sizing import LatencyModelSizes
    from kapell.cli.console_cluster import ClusterConsole
    from kapell.cli.operator_api import operator_app
    from kapell.cli.operator_training import training_plane
    from kapell.cli.serving import bind, server
    from kapell.console.app import CONSOLE_PATH, console_app
    from kapell.control.demand import DemandBoard
    from kapell.control.loop import ReconcileLoop
    from kapell.control.model import ModelController
    from kapell.control.scaling import PolicyScaler
    from kapell.control.sizing import OfferedSizes, PolicySizer
    from kapell.observe.allocations import log_top_allocations
    from kapell.observe.operator_metrics import OperatorMetrics
    from kapell.policy.autoscale import DemandSample

    client = kube_client(kubeconfig)
    _check_crds(client)
    sock = bind(host, port, "kapell operator") if port else None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_top_allocations)  # with PYTHONTRACEMALLOC=1

    def enqueue(key: str) -> None:
        loop.call_soon_threadsafe(reconciler.enqueue, key)

    def reconcile(key: str) -> float | None:
        if not elector.leading.is_set():  # paused: the Lease could not be renewed
            return PAUSED_RETRY_S
        started = time.perf_counter()
        if key.startswith("TrainingJob/"):
            requeue_job = training.controller.reconcile(key) if training else None
            metrics.observe(time.perf_counter() - started)
            return requeue_job
        store.ensure_finalizer(key)
        requeue = controller.reconcile(key)
        stored = store.stored(key)
        if stored is not None and stored.deleting and not replicas.replicas(key):
            replicas.remove_model_objects(key)
            store.release(key)
        metrics.observe(time.perf_counter() - started)
        return requeue

    def demand(model: Model, ready: int) -> DemandSample:
        key = f"{model.metadata.namespace}/{model.metadata.name}"
        return board.sample(key, ready, time.monotonic())

    def wake(model: str) -> None:
        """A gateway holds requests for ``model`` (``namespace/name``): reconcile it now.
        Called on the API server's thread."""
        model_namespace, _, name = model.partition("/")
        enqueue(model_key(model_namespace, name))

    elector = LeaderElector(
        client,
        identity,
        lease_namespace,
        on_lost=lambda: os._exit(1),
        duration_s=lease_duration,
        renew_s=max(0.5, lease_duration / 5),
    )
    store = KubeStore(client, enqueue, namespace, Model, ModelResource, parse_model)
    replicas = KubeReplicas(client, store.stored, enqueue, namespace)
    board = DemandBoard()

    def cold_start_s(model: Model) -> float:
        return replicas.cold_start_s(model.key)

    scaler = PolicyScaler(demand, cold_start_s)
    # `resources.gpu: auto` Models get the size the policy picks among the slices the nodes
    # publish, measured in the latency model (as `kapell up` does).
    sizes = OfferedSizes(LatencyModelSizes(), replicas.offered_sizes)
    sizer = PolicySizer(lambda model: demand(model, 0), sizes, cold_start_s)
    # Informers turn every change of a pod or Model into a reconcile, so polling can be rare.
    controller = ModelController(
        store, replicas, scaler, time.monotonic, utc_now, progress_s=EVENT_DRIVEN_PROGRESS_S,
        resync_s=EVENT_DRIVEN_RESYNC_S, sizer=sizer,
    )  # fmt: skip
    training = training_plane(
        client, enqueue, namespace, training_gang, utc_now, feeds, replicas.nodes.items
    )
    metrics = OperatorMetrics(
        lambda: store.writes + replicas.writes + (training.backend.writes if training else 0)
    )
    reconciler = ReconcileLoop(reconcile)
    console_source = ClusterConsole(
        store, replicas, board, jobs=training.jobs if training is not None else None
    )

    tasks = []
    api = None
    if sock is not None:
        # A thread and event loop of its own: probes, scrapes and demand reports are answered
        # at once even while reconciles keep the controllers' loop busy (10,000 pods).
        app = operator_app(
            board, elector.leading, metrics.registry, wake, console=console_app(console_source)
        )
        api = server(app, sock)
        serving = api
        threading.Thread(
            target=lambda: asyncio.run(serving.serve(sockets=[sock])),
            name="operator-api",
            daemon=True,
        ).start()
        console.print(
            f"kapell operator {identity}: probes, metrics and demand on {host}:{port}, "
            f"the console at http://{host}:{port}{CONSOLE_PATH}/"
        )
    elector.start()
    console.print(
        f"kapell operator {identity}: waiting for the lease {lease_namespace}/kapell-operator"
    )
    informers = [*replicas.informers, store.informer, *(training.informers if training else [])]
    late = training.late if training else []
    try:
        while not elector.leading.is_set():
            if stop.is_set():
                return
            await asyncio.sleep(0.2)
        console.print(f"kapell operator {identity}: leading")
        for informer in [*informers, *late]:
            informer.start()
        await loop.run_in_executor(None, wait_synced, informers, SYNC_TIMEOUT_S)
        for key in [*store.object_keys(), *(training.object_keys() if training else [])]:
            reconciler.enqueue(key)
        console.print(f"kapell operator {identity}: watching {namespace or 'all namespaces'}")
        tasks.append(loop.create_task(reconciler.run()))
        if api is not None:  # the console's plots: sampled only where the console is served
            tasks.append(loop.create_task(console_source.run()))
        await stop.wait()
    finally:
        if api is not None:
            api.should_exit = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for informer in [*informers, *late]:
            informer.stop()
        replicas.close()
        store.close()
        if training is not None:
            training.backend.close()
        elector.stop()
        console.print(f"kapell operator {identity}: stopped (the lease is free)")


def bench_operator(
    models: Annotated[
        int, typer.Option(help="Models to create (and Deployments for the baseline).")
    ] = 1000,
    nodes: Annotated[int, typer.Option(help="kwok GPU nodes in the dev cluster.")] = 1000,
    replicas: Annotated[int, typer.Option(help="Replicas per Model (pods per Deployment).")] = 10,
    gpus: Annotated[
        str, typer.Option(help="GPUs per node, TYPE:COUNT (a replica takes one whole GPU).")
    ] = "h100:10",
    state_dir: Annotated[Path, typer.Option(help="The benchmark's dev cluster state.")] = Path(
        ".kapell/bench-operator"
    ),
    baseline: Annotated[
        bool,
        typer.Option(help="Also time the same pods as Deployments (the comparison's baseline)."),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """The operator at scale on kwok GPU nodes, beside the same pods as Deployments (JSON out)."""
    import json

    from kapell.api.errors import KapellError
    from kapell.bench.operator import OperatorBench, run

    if models < 1 or nodes < 1 or replicas < 1:
        raise KapellError("--models, --nodes and --replicas: expected at least 1")
    config = OperatorBench(models, nodes, replicas, gpus, state_dir, baseline=baseline)
    report = run(config, lambda step: console.print(f"  {step}"))
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            console.print(f"{key}: {value}", highlight=False)
