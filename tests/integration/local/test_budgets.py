"""Budgets end to end: a real `kapell up` with a sim engine, the openai client as the caller.

A namespace's daily token cap is reached by real requests; then requests get a 429 that says
why, a scale-up is refused with an ``OverBudget`` condition, the replica already running keeps
running, and after a restart the accounted spend (and the refusal) are still there.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai

from kapell.cli.accounting import ACCOUNT_EVERY_S
from tests.integration.local.conftest import Instance, stop

SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: chat, namespace: team-a}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.3", "--speedup", "20"]}
  scaling: {minReplicas: REPLICAS, maxReplicas: 4}
---
apiVersion: kapell.dev/v1alpha1
kind: Budget
metadata: {name: daily, namespace: team-a}
spec:
  period: day
  limits: {tokens: 300}
"""
StartFn = Callable[..., Instance]


def spend(instance: Instance) -> dict[str, object]:
    with urllib.request.urlopen(instance.admin_url + "/admin/v1/spend", timeout=5) as r:
        return dict(json.loads(r.read()))


def _tokens(report: dict[str, object]) -> list[tuple[object, ...]]:
    rows = report["rows"]
    assert isinstance(rows, list)
    return [(r["tenant"], r["period"], r["tokensIn"], r["tokensOut"]) for r in rows]


def settled_spend(instance: Instance) -> dict[str, object]:
    """The spend report once the ledger has taken in every request's tokens: accounting writes
    it once a second (``ACCOUNT_EVERY_S``), so two reports a tick and a half apart agree (energy
    goes on growing while a replica runs)."""
    report = spend(instance)
    for _ in range(20):
        time.sleep(ACCOUNT_EVERY_S * 1.5)
        again = spend(instance)
        if _tokens(again) == _tokens(report):
            return again
        report = again
    raise AssertionError(f"the tokens in the spend ledger kept changing: {report}")


def chat_until_refused(instance: Instance, limit: int = 200) -> tuple[int, openai.APIStatusError]:
    client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0)
    for sent in range(limit):
        try:
            client.chat.completions.create(
                model="chat", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
            )
        except openai.APIStatusError as exc:
            return sent, exc
    raise AssertionError(f"{limit} requests and no refusal")


def overbudget(instance: Instance) -> dict[str, str]:
    model = instance.kapell("get", "model", "chat", "-n", "team-a", "-o", "json")
    conditions = json.loads(model.stdout)["status"]["conditions"]
    return dict(next(c for c in conditions if c["type"] == "OverBudget"))


def test_budget_refuses_new_work_at_its_cap_and_survives_a_restart(
    kapell_up: StartFn, tmp_path: Path
) -> None:
    spec_path = tmp_path / "budget.yaml"
    spec_path.write_text(SPEC.replace("REPLICAS", "1"))
    instance = kapell_up(SPEC.replace("REPLICAS", "1"), args=("--carbon-intensity", "400"))

    answered, refused = chat_until_refused(instance)
    assert answered > 0 and refused.status_code == 429
    assert "namespace 'team-a' is over its daily budget" in str(refused.message)
    assert "tokens used this day (UTC)" in str(refused.message)

    spec_path.write_text(SPEC.replace("REPLICAS", "3"))  # ask for more replicas: refused
    assert instance.kapell("apply", "-f", str(spec_path)).returncode == 0
    instance.wait_for(
        lambda: overbudget(instance).get("reason") == "ScaleUpRefused", 10, "OverBudget"
    )
    assert "from 1 to 3 replicas refused" in overbudget(instance)["message"]
    assert len(instance.replicas()) == 1, "the replica already running was stopped"

    before = settled_spend(instance)
    [row] = [r for r in before["rows"] if r["period"] == "day" and r["tenant"] == "anonymous"]  # type: ignore[attr-defined]
    assert row["tokensIn"] + row["tokensOut"] >= 300
    assert row["joules"] > 0 and row["energySource"] == "modelled"
    assert row["gramsCo2"] > 0  # 400 g/kWh from --carbon-intensity
    [budget] = before["budgets"]  # type: ignore[misc]
    assert budget["remaining"] == {"tokens": 0.0} and budget["refusal"]

    table = instance.kapell("spend", "-n", "team-a")
    assert table.returncode == 0, table.stderr
    assert "team-a" in table.stdout and "anonymous" in table.stdout
    assert "over its daily budget" in table.stdout
    with urllib.request.urlopen(instance.gateway_url + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'kapell_budget_over{budget="daily",namespace="team-a"} 1.0' in metrics
    assert 'kapell_spend_prompt_tokens{namespace="team-a",period="day"' in metrics

    stop(instance)
    resumed = kapell_up(None, ready=0)
    after = spend(resumed)
    [again] = [r for r in after["rows"] if r["period"] == "day" and r["tenant"] == "anonymous"]  # type: ignore[attr-defined]
    assert again["tokensIn"] == row["tokensIn"] and again["tokensOut"] == row["tokensOut"]
    _, refused_again = chat_until_refused(resumed, limit=1)
    assert refused_again.status_code == 429
    resumed.wait_for(lambda: overbudget(resumed).get("status") == "True", 10, "OverBudget")
    assert resumed.replicas(ready_only=False) == [], "over budget, nothing new may start"


JOB_OVER_BUDGET = """\
apiVersion: kapell.dev/v1alpha1
kind: Budget
metadata: {name: none-left, namespace: team-b}
spec:
  period: month
  limits: {tokens: 0}
---
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: tiny, namespace: team-b}
spec:
  entrypoint: python -c "print('trained')"
"""


def test_a_training_job_is_not_started_in_a_namespace_over_its_budget(
    kapell_up: StartFn,
) -> None:
    instance = kapell_up(JOB_OVER_BUDGET, ready=0)

    def refused() -> dict[str, str] | None:
        job = instance.kapell("get", "trainingjob", "tiny", "-n", "team-b", "-o", "json")
        conditions = json.loads(job.stdout)["status"]["conditions"]
        found = next((c for c in conditions if c["type"] == "OverBudget"), None)
        return found if found is not None and found["reason"] == "StartRefused" else None

    instance.wait_for(lambda: refused() is not None, 10, "OverBudget StartRefused")
    condition = refused()
    assert condition is not None and "over its monthly budget" in condition["message"]
    job = json.loads(
        instance.kapell("get", "trainingjob", "tiny", "-n", "team-b", "-o", "json").stdout
    )
    assert job["status"]["phase"] == "Pending" and not job["status"]["submissionId"]
    assert not (instance.state_dir / "logs" / "trainingjobs").exists(), "a Ray cluster started"
