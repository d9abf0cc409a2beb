"""What an agent may do through ``kapell mcp``: admin API calls confined to one namespace.

Every operation goes through the running ``kapell up``'s admin API, the same calls the CLI
makes, and is scoped to the namespace given at start: a resource elsewhere is refused, not
hidden behind an error from further down. Work that adds load (a Model or a TrainingJob
applied, a Model scaled up) is refused while the namespace is over its Budget, with what is
left in the message. Agents read Budgets but cannot change them: only ``kapell apply`` by a
person does. Every mutation can be a dry run: the unified diff of the spec it would write,
and nothing done.
"""

from __future__ import annotations

import difflib
import io
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML

from kapell.api import Model, Prompt, TrainingJob
from kapell.api import metrics as names
from kapell.api.errors import KapellError, NotFoundError, SpecError
from kapell.api.meta import Resource
from kapell.cli.client import call

READABLE = ("Model", "TrainingJob", "Prompt", "VectorStore", "Budget")
WRITABLE = ("Model", "TrainingJob", "Prompt", "VectorStore")
ADDS_LOAD = ("Model", "TrainingJob")
GAUGES = {
    names.GATEWAY_QUEUE_DEPTH: "queue_depth",
    names.GATEWAY_IN_FLIGHT: "in_flight",
    names.GATEWAY_REPLICAS_READY: "replicas_ready",
}
LATENCIES = {
    names.GATEWAY_TTFT_SECONDS: "mean_time_to_first_token_s",
    names.GATEWAY_E2E_SECONDS: "mean_request_duration_s",
}


class Refused(KapellError):
    """A request the scope will not carry out (another namespace, over budget, read-only)."""


def _yaml(spec: Any) -> list[str]:
    if spec is None:
        return []
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(spec, out)
    return out.getvalue().splitlines(keepends=True)


def spec_diff(key: str, current: Any, proposed: Any) -> str:
    """The unified YAML diff from ``current`` spec to ``proposed`` (None: absent)."""
    lines = difflib.unified_diff(
        _yaml(current), _yaml(proposed), f"{key} (current)", f"{key} (proposed)"
    )
    return "".join(lines) or "(no change)\n"


class Scope:
    """The admin API calls an agent may make, all within one namespace."""

    def __init__(self, namespace: str, state_dir: Path) -> None:
        self.namespace = namespace
        self._state_dir = state_dir

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return call(self._state_dir, method, path, body)

    def _key(self, kind: str, name: str) -> str:
        if kind not in READABLE:
            raise Refused(f"unknown or unreachable kind {kind!r}; expected one of "
                          f"{', '.join(READABLE)}")  # fmt: skip
        return f"{kind}/{self.namespace}/{name}"

    # -- reading -----------------------------------------------------------------------------
    def list_kind(self, kind: str) -> list[dict[str, Any]]:
        self._key(kind, "-")
        items = self._call("GET", f"/resources?kind={kind}")["items"]
        return [_summary(i) for i in items if i["metadata"]["namespace"] == self.namespace]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/resources/" + self._key(kind, name))
        return found

    def _current_spec(self, key: str) -> Any:
        try:
            return self._call("GET", "/resources/" + key)["spec"]
        except NotFoundError:
            return None

    def spend(self) -> dict[str, Any]:
        report: dict[str, Any] = self._call("GET", f"/spend?namespace={self.namespace}")
        return report

    def logs(self, name: str, tail: int) -> dict[str, list[str]]:
        key = self._key("Model", name)
        self.get("Model", name)  # a 404 for a Model that is not in this namespace
        replicas = self._call("GET", "/status")["replicas"]
        ids = [r["id"] for r in replicas if r["model_key"] == key]
        return {i: self._call("GET", f"/logs/{i}?tail={tail}")["lines"] for i in ids}

    def metrics(self) -> dict[str, Any]:
        """Per Model of the namespace: the gateway's counters (admin ``/usage``) and its
        ``/metrics`` gauges and mean latencies now."""
        names = {m["name"] for m in self.list_kind("Model")}
        info = self._call("GET", "/status")
        scraped = _scrape(info["gateway_url"] + "/metrics", names)
        out = {}
        for row in self._call("GET", "/usage")["models"]:
            if row["model"] not in names:
                continue
            busy = row["busy_seconds"]
            out[row["model"]] = {
                "requests": row["requests"],
                "prompt_tokens": row["prompt_tokens"],
                "generated_tokens": row["generated_tokens"],
                "busy_seconds": round(busy, 3),
                "tokens_per_busy_second": round(row["generated_tokens"] / busy, 2) if busy else 0,
                **scraped.get(row["model"], {}),
            }
        return out

    # -- budget ------------------------------------------------------------------------------
    def _refuse_if_over_budget(self, action: str) -> None:
        for budget in self.spend()["budgets"]:
            if budget["refusal"]:
                left = ", ".join(f"{k} {v:g}" for k, v in budget["remaining"].items())
                raise Refused(
                    f"{action} refused: {budget['refusal']} (remaining in Budget "
                    f"{budget['name']}: {left})"
                )

    # -- writing -----------------------------------------------------------------------------
    def parse(self, manifest: str) -> Resource:
        """The one resource of ``manifest``, checked to be writable here."""
        from kapell.api.loader import load_text

        try:
            resources = load_text(manifest, "manifest")
        except SpecError as exc:
            raise KapellError("invalid manifest: " + "; ".join(map(str, exc.problems))) from None
        if len(resources) != 1:
            raise KapellError(f"the manifest must hold exactly one resource, not {len(resources)}")
        resource = resources[0]
        name = f"{resource.kind} {resource.metadata.name}"
        if resource.metadata.namespace != self.namespace:
            raise Refused(
                f"refused: {name} is in namespace {resource.metadata.namespace!r}; this agent "
                f"may act only in {self.namespace!r} (set metadata.namespace: {self.namespace})"
            )
        if resource.kind not in WRITABLE:
            raise Refused(f"refused: agents may not change a {resource.kind}; a person does, "
                          "with `kapell apply`")  # fmt: skip
        return resource

    def apply(self, manifest: str, dry_run: bool) -> dict[str, Any]:
        return self.apply_resource(self.parse(manifest), dry_run)

    def apply_resource(self, resource: Resource, dry_run: bool) -> dict[str, Any]:
        body = resource.model_dump(mode="json", by_alias=True, exclude={"status"})
        current = self._current_spec(resource.key)
        diff = spec_diff(resource.key, current, body["spec"])
        if resource.kind in ADDS_LOAD and current != body["spec"]:
            verb = "applying" if current is None or resource.kind != "Model" else "updating"
            self._refuse_if_over_budget(f"{verb} {resource.kind} {resource.metadata.name}")
        if dry_run:
            outcome = "unchanged" if current == body["spec"] else (
                "would create" if current is None else "would configure")  # fmt: skip
            return {"key": resource.key, "outcome": outcome, "dryRun": True, "diff": diff}
        [result] = self._call("POST", "/apply", {"resources": [body]})["results"]
        return {**result, "diff": diff}

    def scale_model(
        self, name: str, min_replicas: int, max_replicas: int | None, dry_run: bool
    ) -> dict[str, Any]:
        current = Model.model_validate(self.get("Model", name))
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
        scaled = current.model_copy(update={"spec": spec})
        body = scaled.model_dump(mode="json", by_alias=True, exclude={"status"})
        diff = spec_diff(scaled.key, self._current_spec(scaled.key), body["spec"])
        if dry_run:
            return {"key": scaled.key, "outcome": "would configure", "dryRun": True, "diff": diff}
        [result] = self._call("POST", "/apply", {"resources": [body]})["results"]
        return {**result, "minReplicas": min_replicas, "maxReplicas": new_max, "diff": diff}

    def delete(self, kind: str, name: str, dry_run: bool) -> dict[str, Any]:
        key = self._key(kind, name)
        if kind not in WRITABLE:
            raise Refused(f"refused: agents may not delete a {kind}")
        diff = spec_diff(key, self.get(kind, name)["spec"], None)  # 404 when absent
        if dry_run:
            return {"key": key, "outcome": "would delete", "dryRun": True, "diff": diff}
        answer: dict[str, Any] = self._call("DELETE", "/resources/" + key)
        return {**answer, "diff": diff}

    # -- prompts and carbon ------------------------------------------------------------------
    def roll_prompt(self, name: str, manifest: str | None, dry_run: bool) -> dict[str, Any]:
        """Apply a new version of Prompt ``name`` (its canary rollout starts), or, without a
        manifest, report the rollout: phase, weights per version, evidence."""
        applied = None
        if manifest is not None:
            prompt = self.parse(manifest)
            if not isinstance(prompt, Prompt) or prompt.metadata.name != name:
                raise KapellError(f"the manifest must hold Prompt {name}")
            current = self._current_spec(prompt.key)
            if current is not None and prompt.spec.version <= current.get("version", 1):
                raise KapellError(
                    f"Prompt {name} serves version {current.get('version', 1)}; a rollout "
                    f"needs a higher spec.version, got {prompt.spec.version}"
                )
            applied = self.apply_resource(prompt, dry_run)
            if dry_run:
                return applied
        status = Prompt.model_validate(self.get("Prompt", name)).status
        return {
            **({"applied": applied} if applied else {}),
            "phase": status.phase,
            "stableVersion": status.stable_version,
            "canaryVersion": status.canary_version,
            "weights": {str(v): w for v, w in status.weights().items()},
            "evidence": status.evidence.model_dump(by_alias=True) if status.evidence else None,
            "message": status.message,
        }

    def plan_carbon_start(self, name: str | None, manifest: str | None) -> dict[str, Any]:
        """When the carbon planner would start a TrainingJob (by name, or a manifest not yet
        applied) within its deadline, on the instance's ``--carbon-intensity`` source."""
        from kapell.api.units import parse_duration
        from kapell.cli.training_feeds import intensity_series
        from kapell.policy.carbon.deferral import job_power_w, plan_deferral
        from kapell.policy.energy import default_power_models

        if (name is None) == (manifest is None):
            raise KapellError("give either the name of a TrainingJob or its manifest")
        job = (
            TrainingJob.model_validate(self.get("TrainingJob", name))
            if name is not None
            else self.parse(manifest or "")
        )
        if not isinstance(job, TrainingJob):
            raise KapellError("the manifest must hold a TrainingJob")
        spec = job.spec
        if spec.deadline is None or spec.expected_duration is None:
            raise KapellError(f"TrainingJob {job.metadata.name} has no deadline and "
                              "expectedDuration: there is no window to plan in")  # fmt: skip
        source = self._call("GET", "/status").get("carbon_intensity")
        if source is None:
            raise KapellError("this instance has no carbon intensity source: start `kapell up` "
                              "with --carbon-intensity (a number or a CSV) to plan starts")  # fmt: skip
        series = intensity_series(source)
        assert series is not None
        now = time.time()
        plan = plan_deferral(
            series(now),
            now,
            now + parse_duration(spec.deadline),
            parse_duration(spec.expected_duration),
            job_power_w(spec, default_power_models()),
        )
        return {
            "job": job.key,
            "source": source,
            "plannedStart": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.start_s)),
            "waitSeconds": round(max(0.0, plan.start_s - now)),
            "plannedGCO2": round(plan.planned_g, 1),
            "atOnceGCO2": round(plan.at_once_g, 1),
            "deferrable": spec.deferrable,
        }


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    status = item.get("status", {})
    summary = {"kind": item["kind"], "name": item["metadata"]["name"]}
    if item["kind"] == "Model":
        summary |= {
            "engine": item["spec"]["engine"]["name"],
            "readyReplicas": status.get("readyReplicas", 0),
            "desiredReplicas": status.get("desiredReplicas", 0),
        }
    if "phase" in status:
        summary["phase"] = status["phase"]
    summary["conditions"] = {
        c["type"]: f"{c['status']} {c.get('reason', '')}" for c in status.get("conditions", [])
    }
    return summary


def _scrape(url: str, models: set[str]) -> dict[str, dict[str, float]]:
    """The gateway's per-model gauges and mean latencies from its Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except (OSError, ValueError) as exc:  # URLError is an OSError
        raise KapellError(f"the gateway's {url} did not answer: {exc}") from None
    found: dict[str, dict[str, float]] = {}
    sums: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model not in models:
                continue
            if family.name in GAUGES:
                found.setdefault(model, {})[GAUGES[family.name]] = sample.value
            elif family.name in LATENCIES and sample.name.endswith(("_sum", "_count")):
                pair = sums.setdefault((model, LATENCIES[family.name]), [0.0, 0.0])
                pair[0 if sample.name.endswith("_sum") else 1] += sample.value
    for (model, label), (total, count) in sums.items():
        found.setdefault(model, {})[label] = round(total / count, 4) if count else 0.0
    return found
