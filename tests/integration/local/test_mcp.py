"""`kapell mcp` driven by the official MCP SDK's client over stdio, against a real `kapell up`.

An agent session given namespace team-a: it lists and deploys Models, reads logs and spend, is
refused a Model in another namespace, and once the namespace is over its Budget, is refused a
scale-up with what is left in the message. Skipped when the SDK (the `mcp` extra) is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.local.conftest import Instance

pytest.importorskip("mcp")

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

MODEL = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  source: {{uri: h100-llama3-8b}}
  engine: {{name: sim, args: ["--cold-start-s", "0.3", "--speedup", "20"]}}
  scaling: {{minReplicas: 1, maxReplicas: 2}}
"""
BUDGET = """\
apiVersion: kapell.dev/v1alpha1
kind: Budget
metadata: {{name: daily, namespace: team-a}}
spec:
  limits: {{tokens: {tokens}}}
"""
StartFn = Callable[..., Instance]


def text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def agent_session(instance: Instance, tmp_path: Path) -> dict[str, Any]:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "kapell.cli", "mcp", "--namespace", "team-a",
              "--state-dir", str(instance.state_dir)],
        env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )  # fmt: skip
    seen: dict[str, Any] = {}
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
        listed = await session.call_tool("list_models", {})
        seen["listed"] = json.loads(text(listed))["models"]
        deployed = await session.call_tool(
            "apply_model", {"manifest": MODEL.format(name="helper", namespace="team-a")}
        )
        seen["deployed"] = (deployed.is_error, json.loads(text(deployed)))
        other = await session.call_tool(
            "apply_model", {"manifest": MODEL.format(name="intruder", namespace="team-b")}
        )
        seen["other"] = (other.is_error, text(other))
        bad = await session.call_tool("apply_model", {"manifest": "kind: Model\nspec: {}\n"})
        seen["bad"] = (bad.is_error, text(bad))
        logs = await session.call_tool("read_logs", {"name": "chat", "tail": 5})
        seen["logs"] = json.loads(text(logs))
        # The namespace spends past its Budget (a person set it; agents cannot change it).
        budget = tmp_path / "budget.yaml"
        budget.write_text(BUDGET.format(tokens=50))
        assert instance.kapell("apply", "-f", str(budget)).returncode == 0
        client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0)
        client.chat.completions.create(
            model="chat", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
        )
        for _ in range(50):  # the accountant ticks every second
            spend = json.loads(text(await session.call_tool("get_spend", {})))
            if spend["budgets"] and spend["budgets"][0]["refusal"]:
                break
            await asyncio.sleep(0.2)
        seen["spend"] = spend
        scale = await session.call_tool("scale_model", {"name": "chat", "min_replicas": 2})
        seen["scale"] = (scale.is_error, text(scale))
        deleted = await session.call_tool("delete_model", {"name": "helper"})
        seen["deleted"] = (deleted.is_error, json.loads(text(deleted)))
        seen["after"] = [
            m["name"]
            for m in json.loads(text(await session.call_tool("list_models", {})))["models"]
        ]
    return seen


def test_an_agent_runs_one_namespace_within_its_budget(kapell_up: StartFn, tmp_path: Path) -> None:
    spec = MODEL.format(name="chat", namespace="team-a") + "---\n"
    spec += MODEL.format(name="neighbour", namespace="team-b")
    instance = kapell_up(spec, ready=2)
    seen = asyncio.run(agent_session(instance, tmp_path))

    assert seen["tools"] == sorted([
        "list_models", "get_model", "apply_model", "scale_model", "delete_model", "get_spend",
        "read_logs",
    ])  # fmt: skip
    assert [m["name"] for m in seen["listed"]] == ["chat"], "team-b's Model was listed"
    assert seen["deployed"] == (False, {"key": "Model/team-a/helper", "outcome": "created"})
    refused, message = seen["other"]
    assert refused and "may act only in 'team-a'" in message
    invalid, problem = seen["bad"]
    assert invalid and "invalid manifest: manifest:1: apiVersion: expected" in problem
    assert seen["logs"] and all(isinstance(lines, list) for lines in seen["logs"].values())
    assert {b["namespace"] for b in seen["spend"]["budgets"]} == {"team-a"}
    assert {r["namespace"] for r in seen["spend"]["rows"]} == {"team-a"}
    over, why = seen["scale"]
    assert (
        over
        and "scaling Model chat up refused" in why
        and "remaining in Budget daily: tokens 0" in why
    )
    assert seen["deleted"] == (False, {"deleted": "Model/team-a/helper"})
    assert seen["after"] == ["chat"]
    status = instance.status()
    assert any(r["model_key"] == "Model/team-b/neighbour" for r in status["replicas"])
