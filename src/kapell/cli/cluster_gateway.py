"""``kapell gateway``: the gateway of ``kapell up``, serving a namespace's Models on a cluster.

The same ``kapell.gateway`` app as the local mode, with its endpoint source fed by watches of the
namespace's Models and their EndpointSlices, its tenant table by watches of the namespace's
Tenants and their key Secrets, and its demand pushed to the operator's ``/v1/demand`` so that
the operator's autoscaler decides for every gateway replica at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from kapell.cli.drift import OtlpEndpoint, TraceContent
from kapell.gateway.config import GatewayConfig

if TYPE_CHECKING:
    from kapell.api.tenant import ApiKey, Tenant

console = Console(stderr=True, highlight=False)
SYNC_TIMEOUT_S = 120.0
DEFAULTS = GatewayConfig()


def gateway(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="Cluster to serve (default: $KUBECONFIG, ~/.kube/config, in-cluster).",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Serve this namespace's Models (default: the kubeconfig's)."
        ),
    ] = None,
    operator_url: Annotated[
        str | None,
        typer.Option(
            "--operator-url",
            help="Where the operator takes demand reports (its --port), for scaling "
            "[default: http://127.0.0.1:8090].",
        ),
    ] = None,
    operator_service: Annotated[
        str | None,
        typer.Option(
            "--operator-service",
            help="NAMESPACE/NAME of the operator's Service: reports go to its ready endpoint "
            "(the leader), found by watching its EndpointSlices.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on (0.0.0.0 in a pod).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on (0: any free).")] = 8000,
    identity: Annotated[
        str | None,
        typer.Option("--identity", help="This replica's name in demand reports (default: unique)."),
    ] = None,
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight-per-replica", min=1, help="Requests sent to one replica at once."
        ),
    ] = DEFAULTS.max_in_flight_per_replica,
    queue_max: Annotated[
        int,
        typer.Option(
            "--queue-max-per-model", min=0, help="Requests a Model may hold waiting; then 429."
        ),
    ] = DEFAULTS.queue_max_per_model,
    otlp_endpoint: OtlpEndpoint = None,
    trace_content: TraceContent = False,
) -> None:
    """Serve the OpenAI-compatible API for a namespace's Models on a Kubernetes cluster."""
    from kapell.api.errors import KapellError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if operator_url and operator_service:
        raise KapellError("give --operator-url or --operator-service, not both")
    if operator_service is not None and operator_service.count("/") != 1:
        raise KapellError(f"--operator-service {operator_service}: expected NAMESPACE/NAME")
    me = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    limits = replace(
        DEFAULTS,
        max_in_flight_per_replica=max_in_flight,
        queue_max_per_model=queue_max,
        otlp_endpoint=otlp_endpoint,
        trace_content=trace_content,
    )
    operator = operator_service or operator_url or "http://127.0.0.1:8090"
    asyncio.run(_run(kubeconfig, namespace, operator, host, port, me, limits))


async def _run(
    kubeconfig: Path | None,
    namespace: str | None,
    operator: str,
    host: str,
    port: int,
    identity: str,
    config: GatewayConfig,
) -> None:
    """``operator`` is a URL, or the NAMESPACE/NAME of the operator's Service."""
    from kapell.backends.kubernetes.endpoints import KubeEndpointFeed, ServiceLeader
    from kapell.backends.kubernetes.informer import Informer, wait_synced
    from kapell.backends.kubernetes.tenants import KubeTenants
    from kapell.cli.operator import kube_client
    from kapell.cli.serving import bind, server
    from kapell.gateway.app import create_app
    from kapell.gateway.demand_report import DemandReporter
    from kapell.gateway.endpoints import StaticEndpointSource
    from kapell.gateway.server import tune_gc
    from kapell.gateway.tenancy import tenant_configs

    client = kube_client(kubeconfig)
    served = namespace or client.namespace
    sock = bind(host, port, "kapell gateway")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def call_soon(callback: Callable[[], None]) -> None:
        loop.call_soon_threadsafe(callback)

    endpoints = StaticEndpointSource(on_capacity_request=lambda name: reporter.wake(name))
    app = create_app(endpoints, config)
    feed = KubeEndpointFeed(client, served, endpoints, call_soon)
    informers: list[Informer[Any]] = list(feed.informers)
    operator_url: Callable[[], str | None]
    if "://" in operator:
        operator_url = lambda: operator  # noqa: E731
    else:
        service_namespace, service = operator.split("/")
        leader = ServiceLeader(client, service_namespace, service)
        informers.append(leader.slices)
        operator_url = leader.url
    reporter = DemandReporter(
        operator_url, identity, app.state.gateway.meter, endpoints.model_names, served
    )
    table = app.state.gateway.tenants

    def tenants_changed(tenants: list[Tenant], keys: list[ApiKey]) -> None:
        configs = tenant_configs(tenants, keys)
        call_soon(lambda: table.update(configs))

    tenants = KubeTenants(client, served, tenants_changed)
    for informer in informers:
        informer.start()
    await loop.run_in_executor(None, wait_synced, informers, SYNC_TIMEOUT_S)
    feed.publish()
    await loop.run_in_executor(None, tenants.start, SYNC_TIMEOUT_S)  # its first table too

    web = server(app, sock)
    tune_gc()
    tasks = [loop.create_task(web.serve(sockets=[sock])), loop.create_task(reporter.run())]
    url = f"http://{host}:{sock.getsockname()[1]}"
    console.print(
        f"kapell gateway {identity}: {len(endpoints.model_names())} Model(s) in namespace "
        f"{served}; demand to {operator}"
    )
    console.print(f"kapell {table.summary()}", soft_wrap=True)
    print(f"Gateway: {url} (OpenAI API at {url}/v1)", flush=True)
    try:
        await stop.wait()
    finally:
        web.should_exit = True
        await asyncio.gather(tasks[0], return_exceptions=True)
        tasks[1].cancel()
        for informer in informers:
            informer.stop()
        tenants.stop()
