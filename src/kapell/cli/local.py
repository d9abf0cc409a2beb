"""Commands of the local mode: up, down, apply, get, delete, logs, status."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kapell.api import KINDS, Model, Resource
from kapell.api.errors import KapellError, NotRunningError, Problem, SpecError
from kapell.cli.client import DEFAULT_STATE_DIR, call, instance_info

Files = Annotated[list[Path], typer.Option("-f", "--file", help="Resource YAML files.")]
StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the local instance keeps its state.")
]
console = Console(highlight=False)


def load(files: list[Path]) -> list[Resource]:
    """Validated resources with local model paths made absolute (relative to their file).

    Beyond the schema, Models are checked for what would stop their replicas from starting on
    this machine (an engine not installed, an unknown ``sim`` profile, missing weights), each
    problem reported as ``FILE:LINE: field: message``.
    """
    from kapell.api.loader import load_files
    from kapell.engines.adapters import local_problems

    resources: list[Resource] = []
    problems: list[Problem] = []
    for path in files:

        def check(
            resource: Resource, base: Path = path.parent
        ) -> list[tuple[tuple[str, ...], str]]:
            if not isinstance(resource, Model):
                return []
            absolute = _absolute_source(resource, base)
            assert isinstance(absolute, Model)
            return local_problems(absolute)

        try:
            for resource in load_files([path], check):
                resources.append(_absolute_source(resource, path.parent))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return resources


def _absolute_source(resource: Resource, base: Path) -> Resource:
    if not isinstance(resource, Model) or resource.spec.engine.name == "sim":
        return resource
    source = resource.spec.source
    if source.scheme != "file" or source.uri is None:
        return resource
    path = Path(source.uri.removeprefix("file://"))
    if path.is_absolute():
        return resource
    new_source = source.model_copy(update={"uri": str((base / path).resolve())})
    new_spec = resource.spec.model_copy(update={"source": new_source})
    return resource.model_copy(update={"spec": new_spec})


def up(
    files: Files,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    port: Annotated[int, typer.Option("--port", help="Gateway port (0: any free port).")] = 8000,
) -> None:
    """Run kapell on this machine: replicas, controllers and the gateway, until Ctrl-C."""
    resources = load(files)
    try:
        info = instance_info(state_dir)
        call(state_dir, "GET", "/status", timeout_s=2)
        raise KapellError(
            f"kapell is already running from {state_dir} (pid {info['pid']}, gateway "
            f"{info['gateway_url']}); use `kapell apply -f FILE` or `kapell down` first"
        )
    except NotRunningError:
        pass
    from kapell.cli.up import run

    try:
        import uvloop

        uvloop.run(run(resources, state_dir, port))
    except ImportError:
        asyncio.run(run(resources, state_dir, port))


def down(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for a clean stop.")] = 30.0,
) -> None:
    """Stop the running instance and every replica it started."""
    call(state_dir, "POST", "/shutdown")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            call(state_dir, "GET", "/status", timeout_s=1)
        except NotRunningError:
            console.print("kapell stopped")
            return
        time.sleep(0.2)
    raise KapellError(f"kapell did not stop within {timeout_s:.0f}s")


def apply(files: Files, state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Create or update resources in the running instance."""
    resources = load(files)
    body = {
        "resources": [
            r.model_dump(mode="json", by_alias=True, exclude={"status"}) for r in resources
        ]
    }
    for result in call(state_dir, "POST", "/apply", body)["results"]:
        kind, _, name = result["key"].split("/")
        console.print(f"{kind.lower()}/{name} {result['outcome']}")


def _kind(kind: str) -> str:
    by_lower = {k.lower(): k for k in KINDS} | {k.lower() + "s": k for k in KINDS}
    found = by_lower.get(kind.lower())
    if found is None:
        raise KapellError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return found


def get(
    kind: Annotated[str, typer.Argument(help="Model, TrainingJob, Prompt, ...")] = "Model",
    name: Annotated[str | None, typer.Argument()] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table, json or yaml")] = "table",
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List resources, or show one."""
    kind = _kind(kind)
    if name is not None:
        items = [call(state_dir, "GET", f"/resources/{kind}/{namespace}/{name}")]
    else:
        items = call(state_dir, "GET", f"/resources?kind={kind}")["items"]
    if output == "json":
        typer.echo(json.dumps(items if name is None else items[0], indent=2))
    elif output == "yaml":
        _print_yaml(items)
    elif output == "table":
        _print_table(kind, items)
    else:
        raise KapellError(f"unknown output format {output!r}; use table, json or yaml")


def _print_yaml(items: list[dict[str, Any]]) -> None:
    import io

    from ruamel.yaml import YAML

    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump_all(items, buffer)
    typer.echo(buffer.getvalue(), nl=False)


def _print_table(kind: str, items: list[dict[str, Any]]) -> None:
    table = Table(box=None, header_style="bold")
    for column in (
        ("NAME", "READY", "REASON", "AGE")
        if kind != "Model"
        else ("NAME", "ENGINE", "READY", "DESIRED", "REASON", "MESSAGE")
    ):
        table.add_column(column)
    for item in items:
        status = item.get("status", {})
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        degraded = next(
            (
                c
                for c in status.get("conditions", [])
                if c["type"] == "Degraded" and c["status"] == "True"
            ),
            None,
        )
        shown = degraded or ready
        reason = shown["reason"] if shown else "Pending"
        if kind == "Model":
            table.add_row(
                item["metadata"]["name"],
                item["spec"]["engine"]["name"],
                f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}",
                str(status.get("desiredReplicas", 0)),
                reason,
                shown["message"] if shown else "",
            )
        else:
            table.add_row(item["metadata"]["name"], ready["status"] if ready else "-", reason, "")
    console.print(table)


def delete(
    kind: Annotated[str | None, typer.Argument()] = None,
    name: Annotated[str | None, typer.Argument()] = None,
    files: Annotated[list[Path] | None, typer.Option("-f", "--file")] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete resources by kind and name, or every resource in files."""
    if files:
        keys = [r.key for r in load(files)]
    elif kind is not None and name is not None:
        keys = [f"{_kind(kind)}/{namespace}/{name}"]
    else:
        raise KapellError("name a resource (`kapell delete model NAME`) or pass -f FILE")
    for key in keys:
        call(state_dir, "DELETE", "/resources/" + key)
        kind_, _, name_ = key.split("/")
        console.print(f"{kind_.lower()}/{name_} deleted")


def logs(
    model: Annotated[str, typer.Argument(help="Model name.")],
    replica: Annotated[str | None, typer.Option(help="One replica id; default all.")] = None,
    tail: Annotated[int, typer.Option(help="Lines per replica.")] = 100,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Print the engine logs of a model's replicas."""
    status = call(state_dir, "GET", "/status")
    ids = [r["id"] for r in status["replicas"] if r["model_key"].endswith(f"/{model}")]
    if replica is not None:
        ids = [replica]
    if not ids:
        raise KapellError(f"model {model!r} has no replica; `kapell get` lists models")
    for replica_id in ids:
        answer = call(state_dir, "GET", f"/logs/{replica_id}?tail={tail}")
        console.print(f"[bold]==> {replica_id} ({answer['path']})[/bold]")
        for line in answer["lines"]:
            typer.echo(line)


def status(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Show the running instance: its addresses, models and replicas."""
    info = call(state_dir, "GET", "/status")
    console.print(f"kapell {info['version']} (pid {info['pid']})")
    console.print(f"  gateway: {info['gateway_url']}\n  admin:   {info['admin_url']}")
    console.print(f"  state:   {info['state_dir']}")
    table = Table(box=None, header_style="bold")
    for column in ("REPLICA", "MODEL", "PHASE", "URL", "RESTARTS", "MESSAGE"):
        table.add_column(column)
    for r in info["replicas"]:
        table.add_row(
            r["id"],
            r["model_key"].rsplit("/", 1)[-1],
            r["phase"],
            r["url"],
            str(r["restarts"]),
            r["message"],
        )
    console.print(table)
    if info["events"]:
        console.print("\n[bold]recent events[/bold]")
        for e in info["events"]:
            console.print(f"  {e['at']}  {e['replica']:<24} {e['event']:<9} {e['message']}")
