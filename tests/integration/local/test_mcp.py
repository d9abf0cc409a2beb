"""`kapell mcp` driven by the official MCP SDK's client over stdio, against a real `kapell up`.

An agent session given namespace team-a: it lists and deploys Models, dry-runs a scale-up (a
diff, nothing changed), reads logs, metrics and spend, rolls a Prompt to a new version, is
refused a Model and a TrainingJob in another namespace, and once the namespace is over its
Budget, is refused a scale-up with what is left in the message. A second server process then
reads the audit trail the first left. Skipped when the SDK (the `mcp` extra) is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
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
JOB = """\
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: sneak, namespace: team-b}
spec:
  entrypoint: python -c "print('trained')"
"""
PLANNED = (  # a deferrable job of team-a: the planner may hold it within its deadline
    JOB.replace("{name: sneak, namespace: team-b}", "{name: nightly, namespace: team-a}")
    + "  deferrable: true\n  deadline: 12h\n  expectedDuration: 2h\n"
)
PROMPT = """\
apiVersion: kapell.dev/v1alpha1
kind: Prompt
metadata: {{name: greet, namespace: team-a}}
spec:
  model: chat
  version: {version}
  template: "{template}"
  rollout: {{steps: [50, 100], stepInterval: 1s, minRequests: 1000}}
"""
StartFn = Callable[..., Instance]


def falling_intensity(path: Path) -> None:
    """An hourly intensity file around now that gets cleaner every hour (for the planner)."""
    start = int(time.time() // 3600) * 3600
    rows = [
        f"{datetime.fromtimestamp(start + h * 3600, UTC):%Y-%m-%d %H:%M:%S},{500 - 10 * h}"
        for h in range(-2, 30)
    ]
    path.write_text("Time,Carbon Intensity\n" + "\n".join(rows) + "\n")


def text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def server_for(instance: Instance, agent: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "kapell.cli", "mcp", "--namespace", "team-a", "--agent", agent,
              "--state-dir", str(instance.state_dir)],
        env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )  # fmt: skip


async def agent_session(instance: Instance, tmp_path: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with (
        stdio_client(server_for(instance, "agent-one")) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
        listed = await session.call_tool("list_resources", {"kind": "Model"})
        seen["listed"] = json.loads(text(listed))["items"]
        deployed = await session.call_tool(
            "apply", {"manifest": MODEL.format(name="helper", namespace="team-a")}
        )
        seen["deployed"] = (deployed.is_error, json.loads(text(deployed)))
        dry = await session.call_tool(
            "scale_model", {"name": "chat", "min_replicas": 2, "max_replicas": 3, "dry_run": True}
        )
        seen["dry"] = (dry.is_error, json.loads(text(dry)))
        after_dry = await session.call_tool("get_resource", {"kind": "Model", "name": "chat"})
        seen["after_dry"] = json.loads(text(after_dry))["spec"]["scaling"]
        other = await session.call_tool(
            "apply", {"manifest": MODEL.format(name="intruder", namespace="team-b")}
        )
        seen["other"] = (other.is_error, text(other))
        job = await session.call_tool("apply", {"manifest": JOB})
        seen["job"] = (job.is_error, text(job))
        bad = await session.call_tool("apply", {"manifest": "kind: Model\nspec: {}\n"})
        seen["bad"] = (bad.is_error, text(bad))
        logs = await session.call_tool("read_logs", {"name": "chat", "tail": 5})
        seen["logs"] = json.loads(text(logs))
        seen["prompt"] = await roll_a_prompt(session, instance)
        metrics = await session.call_tool("read_metrics", {})
        seen["metrics"] = (metrics.is_error, json.loads(text(metrics)))
        carbon = await session.call_tool("plan_carbon_start", {"manifest": PLANNED})
        seen["carbon"] = (carbon.is_error, text(carbon))
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
        deleted = await session.call_tool("delete", {"kind": "Model", "name": "helper"})
        seen["deleted"] = (deleted.is_error, json.loads(text(deleted)))
        listed = await session.call_tool("list_resources", {"kind": "Model"})
        seen["after"] = [m["name"] for m in json.loads(text(listed))["items"]]
    # A new server process (a restart) reads what the first one recorded.
    async with (
        stdio_client(server_for(instance, "agent-two")) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        audit = await session.call_tool("read_audit", {"limit": 100})
        seen["audit"] = json.loads(text(audit))["records"]
    return seen


async def roll_a_prompt(session: ClientSession, instance: Instance) -> dict[str, Any]:
    """Version 1 of a Prompt, then version 2 rolled out: the canary starts at its first step."""
    first = PROMPT.format(version=1, template="Be brief.")
    applied = await session.call_tool("apply", {"manifest": first})
    assert not applied.is_error, text(applied)
    for _ in range(50):
        status = json.loads(text(await session.call_tool("roll_prompt", {"name": "greet"})))
        if status["stableVersion"] == 1:
            break
        await asyncio.sleep(0.2)
    second = PROMPT.format(version=2, template="Be very brief.")
    stale = await session.call_tool("roll_prompt", {"name": "greet", "manifest": first})
    rolled = await session.call_tool("roll_prompt", {"name": "greet", "manifest": second})
    assert not rolled.is_error, text(rolled)
    for _ in range(50):
        status = json.loads(text(await session.call_tool("roll_prompt", {"name": "greet"})))
        if status["phase"] == "Progressing":
            break
        await asyncio.sleep(0.2)
    return {"stale": (stale.is_error, text(stale)), "rolled": json.loads(text(rolled)),
            "status": status}  # fmt: skip


def test_an_agent_runs_one_namespace_within_its_budget(kapell_up: StartFn, tmp_path: Path) -> None:
    spec = MODEL.format(name="chat", namespace="team-a") + "---\n"
    spec += MODEL.format(name="neighbour", namespace="team-b")
    falling_intensity(tmp_path / "intensity.csv")
    instance = kapell_up(
        spec, ready=2, args=("--carbon-intensity", str(tmp_path / "intensity.csv"))
    )
    seen = asyncio.run(agent_session(instance, tmp_path))

    assert seen["tools"] == sorted([
        "list_resources", "get_resource", "apply", "scale_model", "delete", "roll_prompt",
        "plan_carbon_start", "read_metrics", "get_spend", "read_logs", "read_audit",
    ])  # fmt: skip
    assert [m["name"] for m in seen["listed"]] == ["chat"], "team-b's Model was listed"
    created, result = seen["deployed"]
    assert not created and (result["key"], result["outcome"]) == ("Model/team-a/helper", "created")
    assert "+++ Model/team-a/helper (proposed)" in result["diff"]
    failed, dry = seen["dry"]
    assert not failed and dry["dryRun"] and dry["outcome"] == "would configure"
    assert "-  minReplicas: 1" in dry["diff"] and "+  minReplicas: 2" in dry["diff"]
    assert "+  maxReplicas: 3" in dry["diff"]
    assert seen["after_dry"]["minReplicas"] == 1, "a dry run changed the Model"
    refused, message = seen["other"]
    assert refused and "may act only in 'team-a'" in message
    refused, message = seen["job"]
    assert refused and "TrainingJob sneak is in namespace 'team-b'" in message
    assert not any(r["metadata"]["name"] == "sneak" for r in instance.status()["resources"]), (
        "the refused TrainingJob was applied"
    )
    stale_error, stale = seen["prompt"]["stale"]
    assert stale_error and "needs a higher spec.version, got 1" in stale
    assert seen["prompt"]["rolled"]["applied"]["outcome"] == "configured"
    prompt = seen["prompt"]["status"]
    assert prompt["phase"] == "Progressing" and prompt["canaryVersion"] == 2, prompt
    assert prompt["weights"] == {"1": 50, "2": 50}
    failed, metrics = seen["metrics"]
    assert not failed and set(metrics) == {"chat", "helper"}
    assert metrics["chat"]["replicas_ready"] >= 1 and "queue_depth" in metrics["chat"]
    failed, plan = seen["carbon"]
    assert not failed, plan
    plan = json.loads(plan)
    assert plan["job"] == "TrainingJob/team-a/nightly" and plan["waitSeconds"] > 3600
    assert plan["plannedGCO2"] < plan["atOnceGCO2"]
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
    gone, result = seen["deleted"]
    assert not gone and result["deleted"] == "Model/team-a/helper"
    assert "--- Model/team-a/helper (current)" in result["diff"]
    assert seen["after"] == ["chat"]
    status = instance.status()
    assert any(r["model_key"] == "Model/team-b/neighbour" for r in status["replicas"])
    audit = seen["audit"]
    assert {r["agent"] for r in audit} == {"agent-one"} and len({r["session"] for r in audit}) == 1
    by_tool = [(r["tool"], r["outcome"]) for r in audit]
    assert ("scale_model", "dry-run") in by_tool and ("scale_model", "refused") in by_tool
    assert ("apply", "refused") in by_tool and ("apply", "error") in by_tool
    refusal = next(r for r in audit if r["tool"] == "scale_model" and r["outcome"] == "refused")
    assert "tokens 0" in refusal["message"] and refusal["arguments"]["min_replicas"] == 2
    dry_record = next(r for r in audit if r["outcome"] == "dry-run")
    assert "+  minReplicas: 2" in dry_record["diff"]
