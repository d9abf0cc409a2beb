"""``kapell mcp --namespace NS``: a Model Context Protocol server that lets an agent run one
namespace.

The tools are ``mcp_scope.Scope``'s operations (confined to NS, within its budget); every
call, refused or not, is appended to the audit log (``mcp_audit``) with the diff it made or
would make. ``--dry-run`` makes every mutating tool a dry run; each also takes ``dry_run``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from kapell.api.errors import KapellError
from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call
from kapell.cli.mcp_audit import AuditLog
from kapell.cli.mcp_scope import Refused, Scope

INSTRUCTIONS = (
    "Tools to run the kapell namespace {ns}: list, inspect, apply and delete its Models, "
    "TrainingJobs, Prompts and VectorStores, scale Models, roll Prompts, plan carbon-aware "
    "starts, read logs, metrics and spend against the budget, and the audit log. Only "
    "namespace {ns} is reachable; new work is refused while it is over budget. Mutating tools "
    "take dry_run=true to return the diff without acting."
)


def build_server(scope: Scope, audit: AuditLog, dry_run_all: bool = False) -> Any:
    """The MCP server whose tools are ``scope``'s operations; errors become tool errors, and
    every call is audited."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("kapell", instructions=INSTRUCTIONS.format(ns=scope.namespace))

    def run(tool: str, arguments: dict[str, Any], operation: Callable[[], Any]) -> Any:
        try:
            result = operation()
        except KapellError as exc:
            outcome = "refused" if isinstance(exc, Refused) else "error"
            audit.record(tool, arguments, outcome, str(exc), None)
            raise ToolError(str(exc)) from None
        diff = result.get("diff") if isinstance(result, dict) else None
        dry = isinstance(result, dict) and bool(result.get("dryRun"))
        audit.record(tool, arguments, "dry-run" if dry else "ok", "", diff)
        return result

    def dry(asked: bool) -> bool:
        return asked or dry_run_all

    def list_resources(kind: str = "Model") -> dict[str, Any]:
        """The namespace's resources of one kind (Model, TrainingJob, Prompt, VectorStore,
        Budget) with their phase and conditions (incl. OverBudget)."""
        items = run("list_resources", {"kind": kind}, lambda: scope.list_kind(kind))
        return {"namespace": scope.namespace, "kind": kind, "items": items}

    def get_resource(kind: str, name: str) -> dict[str, Any]:
        """One resource of this namespace: spec and status, as `kapell get -o json` shows it."""
        return dict(run("get_resource", {"kind": kind, "name": name},
                        lambda: scope.get(kind, name)))  # fmt: skip

    def apply(manifest: str, dry_run: bool = False) -> dict[str, Any]:
        """Create or update one Model, TrainingJob, Prompt or VectorStore from its YAML
        (metadata.namespace must be this namespace). A Model or TrainingJob is refused while
        over budget. dry_run: return the diff only."""
        args = {"manifest": manifest, "dry_run": dry(dry_run)}
        return dict(run("apply", args, lambda: scope.apply(manifest, dry(dry_run))))

    def scale_model(
        name: str, min_replicas: int, max_replicas: int | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Set a Model's replica bounds. Scaling up is refused while over budget."""
        args = {"name": name, "min_replicas": min_replicas, "max_replicas": max_replicas,
                "dry_run": dry(dry_run)}  # fmt: skip
        return dict(run("scale_model", args,
                        lambda: scope.scale_model(name, min_replicas, max_replicas,
                                                  dry(dry_run))))  # fmt: skip

    def delete(kind: str, name: str, dry_run: bool = False) -> dict[str, Any]:
        """Delete a resource of this namespace (a Model's replicas stop)."""
        args = {"kind": kind, "name": name, "dry_run": dry(dry_run)}
        return dict(run("delete", args, lambda: scope.delete(kind, name, dry(dry_run))))

    def roll_prompt(
        name: str, manifest: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """With a manifest of a higher spec.version: apply it, which starts its canary
        rollout. Without: the rollout's phase, weights per version and evidence."""
        args = {"name": name, "manifest": manifest, "dry_run": dry(dry_run)}
        return dict(run("roll_prompt", args,
                        lambda: scope.roll_prompt(name, manifest, dry(dry_run))))  # fmt: skip

    def plan_carbon_start(name: str | None = None, manifest: str | None = None) -> dict[str, Any]:
        """When the carbon planner would start a TrainingJob (by name, or a manifest not yet
        applied) so that it ends by its deadline, and the gCO2 planned vs. starting now."""
        return dict(run("plan_carbon_start", {"name": name, "manifest": manifest},
                        lambda: scope.plan_carbon_start(name, manifest)))  # fmt: skip

    def read_metrics() -> dict[str, Any]:
        """Per Model: requests, tokens, tokens per busy second, queue depth, in flight, ready
        replicas and mean latencies, from the gateway."""
        return dict(run("read_metrics", {}, scope.metrics))

    def get_spend() -> dict[str, Any]:
        """This namespace's spend today and this month per tenant, and its Budgets with what
        is left."""
        return dict(run("get_spend", {}, scope.spend))

    def read_logs(name: str, tail: int = 50) -> dict[str, list[str]]:
        """The last lines of each replica's engine log of a Model in this namespace."""
        return dict(run("read_logs", {"name": name, "tail": tail},
                        lambda: scope.logs(name, tail)))  # fmt: skip

    def read_audit(limit: int = 50) -> dict[str, Any]:
        """The last audit records of this namespace: who, which tool, arguments, diff and
        outcome, from every session (they survive restarts)."""
        return {"path": str(audit.path), "records": audit.read(limit)}

    for tool in (list_resources, get_resource, apply, scale_model, delete, roll_prompt,
                 plan_carbon_start, read_metrics, get_spend, read_logs, read_audit):  # fmt: skip
        server.add_tool(tool)
    return server


def mcp(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The one namespace served.")],
    agent: Annotated[
        str, typer.Option("--agent", help="Who the audit log names as the caller.")
    ] = "mcp-agent",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Every mutating tool only returns its diff.")
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Serve a Model Context Protocol server on stdio whose tools act on one namespace of the
    running instance (needs kapell's `mcp` extra, the MCP SDK)."""
    try:
        import mcp as _sdk  # noqa: F401
    except ImportError:
        raise KapellError("kapell mcp needs the MCP SDK: pip install 'kapell[mcp]'") from None
    import re

    from kapell.api.meta import DNS1123_LABEL

    if not re.match(DNS1123_LABEL, namespace):
        raise KapellError(f"--namespace {namespace!r} is not a DNS-1123 label")
    call(state_dir, "GET", "/status", timeout_s=5)  # fail now, with one line, if none runs
    audit = AuditLog(state_dir, namespace, agent)
    build_server(Scope(namespace, state_dir), audit, dry_run).run("stdio")
