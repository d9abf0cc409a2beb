"""``kapell mcp --namespace NS``: a Model Context Protocol server that lets an agent run one
namespace.

Every tool goes through the running ``kapell up``'s admin API, the same calls the CLI makes,
and is scoped to the namespace given at start: a resource elsewhere is refused, not hidden
behind an error from further down. Work that adds load (applying a Model, scaling one up) is
refused while the namespace is over its Budget, with what is left in the message. Agents
cannot change Budgets: only ``kapell apply`` by a person does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from kapell.api import Model
from kapell.api.errors import KapellError, SpecError
from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call

INSTRUCTIONS = (
    "Tools to run the kapell namespace {ns}: list, inspect, apply, scale and delete Models, "
    "read their logs and the namespace's spend against its budget. Only namespace {ns} is "
    "reachable; new work is refused while it is over budget."
)


class Scope:
    """The admin API calls an agent may make, all within one namespace."""

    def __init__(self, namespace: str, state_dir: Path) -> None:
        self.namespace = namespace
        self._state_dir = state_dir

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return call(self._state_dir, method, path, body)

    def _key(self, name: str) -> str:
        return f"Model/{self.namespace}/{name}"

    def list_models(self) -> list[dict[str, Any]]:
        items = self._call("GET", "/resources?kind=Model")["items"]
        return [_summary(i) for i in items if i["metadata"]["namespace"] == self.namespace]

    def get_model(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/resources/" + self._key(name))
        return found

    def spend(self) -> dict[str, Any]:
        report: dict[str, Any] = self._call("GET", f"/spend?namespace={self.namespace}")
        return report

    def _refuse_if_over_budget(self, action: str) -> None:
        for budget in self.spend()["budgets"]:
            if budget["refusal"]:
                left = ", ".join(f"{k} {v:g}" for k, v in budget["remaining"].items())
                raise KapellError(
                    f"{action} refused: {budget['refusal']} (remaining in Budget "
                    f"{budget['name']}: {left})"
                )

    def apply_model(self, manifest: str) -> dict[str, str]:
        from kapell.api.loader import load_text

        try:
            resources = load_text(manifest, "manifest")
        except SpecError as exc:
            raise KapellError("invalid manifest: " + "; ".join(map(str, exc.problems))) from None
        if len(resources) != 1 or not isinstance(resources[0], Model):
            raise KapellError("the manifest must hold exactly one Model")
        model = resources[0]
        if model.metadata.namespace != self.namespace:
            raise KapellError(
                f"refused: Model {model.metadata.name} is in namespace "
                f"{model.metadata.namespace!r}; this agent may act only in {self.namespace!r} "
                f"(set metadata.namespace: {self.namespace})"
            )
        self._refuse_if_over_budget(f"applying Model {model.metadata.name}")
        return self._apply(model)

    def _apply(self, model: Model) -> dict[str, str]:
        body = {"resources": [model.model_dump(mode="json", by_alias=True, exclude={"status"})]}
        [result] = self._call("POST", "/apply", body)["results"]
        return dict(result)

    def scale_model(self, name: str, min_replicas: int, max_replicas: int | None) -> dict[str, Any]:
        current = Model.model_validate(self.get_model(name))
        scaling = current.spec.scaling
        new_max = (
            max_replicas if max_replicas is not None else max(scaling.max_replicas, min_replicas)
        )
        try:
            new_scaling = scaling.model_validate(
                {**scaling.model_dump(), "min_replicas": min_replicas, "max_replicas": new_max}
            )
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]) for e in exc.errors())
            raise KapellError(f"invalid scale of Model {name}: {problems}") from None
        if new_scaling.min_replicas > scaling.min_replicas or new_max > scaling.max_replicas:
            self._refuse_if_over_budget(f"scaling Model {name} up")
        spec = current.spec.model_copy(update={"scaling": new_scaling})
        result = self._apply(current.model_copy(update={"spec": spec}))
        return {**result, "minReplicas": min_replicas, "maxReplicas": new_max}

    def delete_model(self, name: str) -> dict[str, str]:
        answer: dict[str, str] = self._call("DELETE", "/resources/" + self._key(name))
        return answer

    def logs(self, name: str, tail: int) -> dict[str, list[str]]:
        self.get_model(name)  # a 404 for a Model that is not in this namespace
        replicas = self._call("GET", "/status")["replicas"]
        ids = [r["id"] for r in replicas if r["model_key"] == self._key(name)]
        return {i: self._call("GET", f"/logs/{i}?tail={tail}")["lines"] for i in ids}


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    status = item.get("status", {})
    return {
        "name": item["metadata"]["name"],
        "engine": item["spec"]["engine"]["name"],
        "readyReplicas": status.get("readyReplicas", 0),
        "desiredReplicas": status.get("desiredReplicas", 0),
        "conditions": {
            c["type"]: f"{c['status']} {c.get('reason', '')}" for c in status.get("conditions", [])
        },
    }


def build_server(scope: Scope) -> Any:
    """The MCP server whose tools are ``scope``'s operations; errors become tool errors."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("kapell", instructions=INSTRUCTIONS.format(ns=scope.namespace))

    def run(operation: Any, *args: Any) -> Any:
        try:
            return operation(*args)
        except KapellError as exc:
            raise ToolError(str(exc)) from None

    def list_models() -> dict[str, Any]:
        """The Models of this namespace with ready/desired replicas and their conditions."""
        return {"namespace": scope.namespace, "models": run(scope.list_models)}

    def get_model(name: str) -> dict[str, Any]:
        """One Model of this namespace: spec and status, as `kapell get -o json` shows it."""
        return dict(run(scope.get_model, name))

    def apply_model(manifest: str) -> dict[str, str]:
        """Create or update a Model from its YAML manifest (metadata.namespace must be this
        namespace). Refused while the namespace is over budget."""
        return dict(run(scope.apply_model, manifest))

    def scale_model(
        name: str, min_replicas: int, max_replicas: int | None = None
    ) -> dict[str, Any]:
        """Set a Model's replica bounds. Scaling up is refused while over budget."""
        return dict(run(scope.scale_model, name, min_replicas, max_replicas))

    def delete_model(name: str) -> dict[str, str]:
        """Delete a Model of this namespace; its replicas stop."""
        return dict(run(scope.delete_model, name))

    def get_spend() -> dict[str, Any]:
        """This namespace's spend today and this month per tenant, and its Budgets with what
        is left."""
        return dict(run(scope.spend))

    def read_logs(name: str, tail: int = 50) -> dict[str, list[str]]:
        """The last lines of each replica's engine log of a Model in this namespace."""
        return dict(run(scope.logs, name, tail))

    for tool in (list_models, get_model, apply_model, scale_model, delete_model, get_spend,
                 read_logs):  # fmt: skip
        server.add_tool(tool)
    return server


def mcp(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The one namespace served.")],
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
    build_server(Scope(namespace, state_dir)).run("stdio")
