"""``kapell dev cluster up|down``: a local Kubernetes control plane with fake GPU nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

dev_app = typer.Typer(help="Developer tools.", no_args_is_help=True)
cluster_app = typer.Typer(
    help="A real control plane (etcd, apiserver, scheduler, controller-manager, kwok) "
    "with fake GPU nodes published through DRA.",
    no_args_is_help=True,
)
dev_app.add_typer(cluster_app, name="cluster")

StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the cluster keeps kubeconfig, certs, data, logs.")
]


@cluster_app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", help="How many fake GPU nodes.")] = 4,
    serving_nodes: Annotated[
        int,
        typer.Option(
            "--serving-nodes",
            help="How many of the nodes (the first ones) really run their pods, through "
            "kapell's node agent instead of kwok (needs root: network namespaces).",
        ),
    ] = 0,
    node_grace: Annotated[
        int,
        typer.Option(
            "--node-grace",
            help="Seconds a node may miss its heartbeat before it is NotReady; raise it for "
            "hundreds of kwok nodes on a small machine (kwok renews every node's Lease).",
        ),
    ] = 25,
    gpus: Annotated[
        list[str] | None,
        typer.Option(
            "--gpus",
            help="TYPE:COUNT[:MIGPROFILE] per node, e.g. h100:8 or a100:4:1g.10gb; "
            "repeat for several pools (nodes are dealt round-robin).",
        ),
    ] = None,
    state_dir: StateDir = Path(".kapell/dev-cluster"),
    bin_dir: Annotated[
        Path | None, typer.Option("--bin-dir", help="Built binaries (default: k8s-bin/).")
    ] = None,
) -> None:
    """Start the cluster, wait until it can schedule, and print the kubeconfig path."""
    from kapell.devcluster import DevCluster, GpuPool

    pools = [GpuPool.parse(text) for text in gpus or ["h100:8"]]
    cluster = DevCluster(state_dir, bin_dir)
    result = cluster.up(
        nodes, pools, progress=lambda step: typer.echo(f"  {step}", err=True),
        serving_nodes=serving_nodes, node_grace_s=node_grace,
    )  # fmt: skip
    serving = f" (serving: {', '.join(result.serving_nodes)})" if result.serving_nodes else ""
    typer.echo(
        f"ready in {result.ready_s:.1f} s: {result.nodes} nodes{serving}, {result.devices} devices",
        err=True,
    )
    typer.echo(f"export KUBECONFIG={result.kubeconfig}")


@cluster_app.command()
def down(state_dir: StateDir = Path(".kapell/dev-cluster")) -> None:
    """Stop every process of the cluster."""
    from kapell.devcluster import DevCluster

    stopped = DevCluster(state_dir).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no dev cluster was running")
