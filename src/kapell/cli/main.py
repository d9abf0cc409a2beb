"""The ``kapell`` command: the composition root that wires each mode together.

Every command imports what it needs inside its body, so ``kapell --help`` stays fast.
User errors (``KapellError``) print as one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kapell.api.errors import KapellError, SpecError
from kapell.cli import local

app = typer.Typer(
    name="kapell",
    help="An AI orchestrator: serve and train models from one declarative spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks: JSON out, baseline measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

from kapell.cli.placement import bench_placement  # noqa: E402  (light: imports on use)

bench_app.command("placement")(bench_placement)

from kapell.cli.sim import sim_app  # noqa: E402  (light: its commands import lazily)

app.add_typer(sim_app, name="sim")

from kapell.cli.devcluster import dev_app  # noqa: E402  (light: imports on use)
from kapell.cli.operator import bench_operator, operator  # noqa: E402  (light: imports on use)

app.add_typer(dev_app, name="dev")
app.command("operator")(operator)
from kapell.cli.cluster_gateway import gateway  # noqa: E402  (light: imports on use)

app.command("gateway")(gateway)
bench_app.command("operator")(bench_operator)

from kapell.cli.gateway import bench_gateway  # noqa: E402  (light: imports on use)

bench_app.command("gateway")(bench_gateway)

from kapell.cli.energy import bench_carbon, energy_app  # noqa: E402  (light: imports on use)

app.add_typer(energy_app, name="energy")
bench_app.command("carbon")(bench_carbon)

from kapell.cli.carbon import carbon_app  # noqa: E402  (light: imports on use)

app.add_typer(carbon_app, name="carbon")
from kapell.cli.spot import bench_spot  # noqa: E402  (light: imports on use)

bench_app.command("spot")(bench_spot)

from kapell.cli.vectors import bench_vectors  # noqa: E402  (light: imports on use)

bench_app.command("vectors")(bench_vectors)

Files = Annotated[list[Path], typer.Option("-f", "--file", help="Resource YAML files.")]


@app.command()
def validate(files: Files) -> None:
    """Check resource files for this machine; print every problem as FILE:LINE: field: message.

    Besides the schema: engines that are not installed, unknown sim profiles, missing weights.
    """
    resources = local.load(files)
    kinds = sorted({r.kind for r in resources})
    typer.echo(f"{len(resources)} resource(s) valid in {len(files)} file(s): {', '.join(kinds)}")


@app.command()
def crds() -> None:
    """Print the CustomResourceDefinitions of every kapell kind, as YAML."""
    from kapell.api.crd import crd_documents

    typer.echo(crd_documents(), nl=False)


for _command in ("up", "down", "apply", "get", "describe", "delete", "logs", "status"):
    app.command(_command)(getattr(local, _command))

from kapell.cli.chat import chat  # noqa: E402  (light: standard library only)
from kapell.cli.spend import spend  # noqa: E402  (light: imports on use)

app.command("chat")(chat)
app.command("spend")(spend)

from kapell.cli.drift import bench_drift, drift  # noqa: E402  (light: imports on use)

app.command("drift")(drift)
bench_app.command("drift")(bench_drift)

from kapell.cli.mcp_server import mcp  # noqa: E402  (light: the SDK imports on use)

app.command("mcp")(mcp)

from kapell.cli.keys import keys_app  # noqa: E402  (light: imports on use)

app.add_typer(keys_app, name="keys")


def main() -> None:
    """Console entry point: run the app, turning user errors into one-line messages."""
    try:
        app()
    except SpecError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        sys.exit(1)
    except KapellError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
