"""Commands of the local mode: up, down, apply, get, describe, delete, logs, status."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kapell.api import KINDS, Model, Resource, TrainingJob
from kapell.api.errors import KapellError, NotFoundError, NotRunningError, Problem, SpecError
from kapell.api.model import RECIPE_ENGINES
from kapell.cli.client import DEFAULT_STATE_DIR, StateDir, call, instance_info
from kapell.cli.drift import OtlpEndpoint, TraceContent
from kapell.cli.output import age, print_table

Files = Annotated[list[Path], typer.Option("-f", "--file", help="Resource YAML files.")]
FOLLOW_POLL_S = 0.25
"""How often ``logs --follow`` looks for new lines and new replicas."""


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
    """Local paths in a spec made absolute, relative to ``base`` (the spec file's directory):
    a Model's weights, a TrainingJob's working directory and checkpoint location."""
    if isinstance(resource, TrainingJob):
        return _absolute_job_paths(resource, base)
    if not isinstance(resource, Model) or resource.spec.engine.name in RECIPE_ENGINES:
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


def _absolute_job_paths(job: TrainingJob, base: Path) -> TrainingJob:
    def absolute(path: str | None) -> str | None:
        if path is None or ("://" in path and not path.startswith("file://")):
            return path
        return str((base / path.removeprefix("file://")).resolve())

    spec = job.spec
    runtime_env = spec.runtime_env.model_copy(
        update={"working_dir": absolute(spec.runtime_env.working_dir)}
    )
    checkpoint = spec.checkpoint.model_copy(update={"uri": absolute(spec.checkpoint.uri)})
    new_spec = spec.model_copy(update={"runtime_env": runtime_env, "checkpoint": checkpoint})
    return job.model_copy(update={"spec": new_spec})


def up(
    files: Annotated[
        list[Path] | None,
        typer.Option("-f", "--file", help="Resource YAML files, applied on top of saved state."),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    port: Annotated[int, typer.Option("--port", help="Gateway port (0: any free port).")] = 8000,
    carbon_intensity: Annotated[
        str | None,
        typer.Option(
            "--carbon-intensity",
            help="gCO2eq/kWh for spend accounting: a number, or an intensity CSV file "
            "(its reading nearest in time). Default: none (0 gCO2 accounted).",
        ),
    ] = None,
    spot_availability: Annotated[
        Path | None,
        typer.Option(
            "--spot-availability",
            help="Spot availability for TrainingJobs with a deadline and spot workers: a "
            "`kapell bench spot` trace replayed from now, or a file reading 'up' or 'down'. "
            "Default: none (spot groups run on spot).",
        ),
    ] = None,
    serving_gpus: Annotated[
        int | None,
        typer.Option(
            "--serving-gpus",
            min=1,
            help="GPUs the serving fleet owns; opportunistic TrainingJobs borrow the ones it "
            "leaves idle. Default: none (an opportunistic job runs like any other).",
        ),
    ] = None,
    drift_warmup: Annotated[
        int,
        typer.Option(
            "--drift-warmup", help="Requests of each model left out before its reference."
        ),
    ] = 0,
    drift_reference: Annotated[
        int, typer.Option("--drift-reference", help="Requests in each drift reference window.")
    ] = 1000,
    drift_window: Annotated[
        int, typer.Option("--drift-window", help="Requests in each compared drift window.")
    ] = 1000,
    drift_false_alarm_rate: Annotated[
        float,
        typer.Option(
            "--drift-false-alarm-rate", help="Share of stationary windows a feature may alarm on."
        ),
    ] = 0.001,
    drift_latency_shift: Annotated[
        float,
        typer.Option(
            "--drift-latency-shift",
            help="Relative change of median or p90 latency below which a significant "
            "difference is not drift (1.0: doubled or halved).",
        ),
    ] = 1.0,
    otlp_endpoint: OtlpEndpoint = None,
    trace_content: TraceContent = False,
) -> None:
    """Run kapell on this machine: replicas, controllers and the gateway, until Ctrl-C.

    Resources saved in the state directory by an earlier run (or `kapell apply`) are served
    again; files given with -f are applied on top of them.
    """
    resources = load(files or [])
    try:
        info = instance_info(state_dir)
        call(state_dir, "GET", "/status", timeout_s=2)
        raise KapellError(
            f"kapell is already running from {state_dir} (pid {info['pid']}, gateway "
            f"{info['gateway_url']}); use `kapell apply -f FILE` or `kapell down` first"
        )
    except NotRunningError:
        pass
    from kapell.cli.accounting import intensity_source
    from kapell.cli.training_feeds import intensity_series
    from kapell.cli.training_feeds import spot_availability as spot_source
    from kapell.cli.up import TrainingOptions, run
    from kapell.gateway.config import GatewayConfig
    from kapell.policy.drift import DriftSettings

    intensity = intensity_source(carbon_intensity)
    training = TrainingOptions(
        spot_source(spot_availability, time.time()) if spot_availability else None,
        intensity_series(carbon_intensity),
        serving_gpus,
    )
    drift = DriftSettings(
        drift_reference,
        drift_window,
        drift_false_alarm_rate,
        warmup_requests=drift_warmup,
        latency_shift=drift_latency_shift,
    )
    config = GatewayConfig(drift=drift, otlp_endpoint=otlp_endpoint, trace_content=trace_content)
    serve = run(resources, state_dir, port, intensity, carbon_intensity, training, config)
    try:
        import uvloop

        uvloop.run(serve)
    except ImportError:
        asyncio.run(serve)


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
            typer.echo("kapell stopped")
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
        typer.echo(f"{kind.lower()}/{name} {result['outcome']}")


def _kind(kind: str) -> str:
    by_lower = {k.lower(): k for k in KINDS} | {k.lower() + "s": k for k in KINDS}
    found = by_lower.get(kind.lower())
    if found is None:
        raise KapellError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return found


def get(
    kind: Annotated[str, typer.Argument(help="Model, TrainingJob, Prompt, ...")] = "Model",
    name: Annotated[str | None, typer.Argument()] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="table, wide, json or yaml")
    ] = "table",
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """List resources, or show one. `-o wide` adds source, GPU, replicas and endpoints."""
    kind = _kind(kind)
    if output not in ("table", "wide", "json", "yaml"):
        raise KapellError(f"unknown output format {output!r}; use table, wide, json or yaml")
    if name is not None and output in ("json", "yaml"):
        items = [call(state_dir, "GET", f"/resources/{kind}/{namespace}/{name}")]
        stamps: dict[str, Any] = {}
    else:
        answer = call(state_dir, "GET", f"/resources?kind={kind}")
        items, stamps = answer["items"], answer.get("stamps", {})
        if name is not None:
            items = [i for i in items if _key(i) == f"{kind}/{namespace}/{name}"]
            if not items:
                raise NotFoundError(f"{kind}/{namespace}/{name} not found")
    if output == "json":
        typer.echo(json.dumps(items if name is None else items[0], indent=2))
    elif output == "yaml":
        _print_yaml(items)
    else:
        replicas = call(state_dir, "GET", "/status")["replicas"] if output == "wide" else []
        _print_resources(kind, items, stamps, replicas, wide=output == "wide")


def _key(item: dict[str, Any]) -> str:
    meta = item["metadata"]
    return f"{item['kind']}/{meta.get('namespace', 'default')}/{meta['name']}"


def _print_yaml(items: list[dict[str, Any]]) -> None:
    import io

    from ruamel.yaml import YAML

    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump_all(items, buffer)
    typer.echo(buffer.getvalue(), nl=False)


def _shown_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    """The condition a one-line summary shows: Degraded if true, else Ready."""
    conditions = status.get("conditions", [])
    degraded = next(
        (c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"), None
    )
    return degraded or next((c for c in conditions if c["type"] == "Ready"), None)


def _gpu(spec: dict[str, Any], status: dict[str, Any]) -> str:
    gpu = spec.get("resources", {}).get("gpu")
    if not gpu:
        return "-"
    if gpu.get("auto"):  # the size the sizing policy chose (describe's Sized condition: why)
        amount = f"auto: {status.get('replicaSize') or 'not chosen yet'}"
    elif gpu.get("migProfile"):
        amount = f"mig {gpu['migProfile']}"
    elif gpu.get("milli"):
        amount = f"{gpu['milli']}m ({gpu.get('sharing', 'time-slicing')})"
    else:
        amount = f"{gpu.get('count', 0)}"
    models = ",".join(gpu.get("models") or [])
    return f"{amount}{' ' + models if models else ''}"


def _print_resources(
    kind: str,
    items: list[dict[str, Any]],
    stamps: dict[str, Any],
    replicas: list[dict[str, Any]],
    wide: bool,
) -> None:
    rows = []
    for item in items:
        status = item.get("status", {})
        shown = _shown_condition(status)
        reason = shown["reason"] if shown else "Pending"
        created = stamps.get(_key(item), {}).get("createdAt", "")
        name = item["metadata"]["name"]
        if kind == "Tenant":  # no status: show what it allows
            spec = item["spec"]
            limits = [
                str(spec.get(f"{unit}PerMinute", 0) or "-") for unit in ("requests", "tokens")
            ]
            rows.append([name, ",".join(spec.get("models", [])) or "(all)", *limits, age(created)])
            continue
        if kind == "TrainingJob":
            rows.append(_job_row(item, status, created))
            continue
        if kind == "Prompt":
            rows.append(_prompt_row(item, status, created))
            continue
        if kind != "Model":
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
            rows.append([name, ready["status"] if ready else "-", reason, age(created)])
            continue
        spec = item["spec"]
        row = [
            name,
            spec["engine"]["name"],
            f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}",
            str(status.get("desiredReplicas", 0)),
            reason,
            age(created),
        ]
        if wide:
            source = spec["source"].get("uri") or spec["source"].get("url") or "-"
            ids = [r["id"] for r in replicas if r["model_key"] == _key(item)]
            row += [
                source,
                _gpu(spec, status),
                ",".join(ids) or "-",
                ",".join(status.get("endpoints", [])) or "-",
            ]
        rows.append([*row, shown["message"] if shown else ""])
    if kind == "Tenant":
        headers = ["NAME", "MODELS", "RPM", "TPM", "AGE"]
    elif kind == "TrainingJob":
        headers = ["NAME", "PHASE", "STEP", "LOSS", "CHECKPOINTS", "ATTEMPT", "AGE", "MESSAGE"]
    elif kind == "Prompt":
        headers = ["NAME", "MODEL", "VERSION", "WEIGHTS", "PHASE", "AGE", "MESSAGE"]
    elif kind != "Model":
        headers = ["NAME", "READY", "REASON", "AGE"]
    else:
        headers = ["NAME", "ENGINE", "READY", "DESIRED", "REASON", "AGE"]
        headers += ["SOURCE", "GPU", "REPLICAS", "ENDPOINTS"] if wide else []
        headers.append("MESSAGE")
    print_table(headers, rows)


def _prompt_row(item: dict[str, Any], status: dict[str, Any], created: str) -> list[str]:
    """A Prompt's line: the version applied last, each version's weight and state
    (``v1=95% v2=5%(Canary) v0=0%(RolledBack)``), and the rollout's last decision."""
    shares = [
        f"v{v['version']}={v['weight']}%" + ("" if v["state"] == "Stable" else f"({v['state']})")
        for v in status.get("versions", [])
    ]
    return [
        item["metadata"]["name"],
        item["spec"]["model"],
        str(item["spec"].get("version", 1)),
        " ".join(shares) or "-",
        status.get("phase", "Pending") if shares else "Pending",
        age(created),
        status.get("message", ""),
    ]


def _job_row(item: dict[str, Any], status: dict[str, Any], created: str) -> list[str]:
    """A TrainingJob's line: phase and progress, as its driver last reported them."""
    step, loss, last = status.get("step"), status.get("loss"), status.get("lastCheckpointStep")
    checkpoints = str(status.get("checkpoints", 0)) + (
        f" (step {last})" if last is not None else ""
    )
    return [
        item["metadata"]["name"],
        status.get("phase", "Pending"),
        "-" if step is None else str(step),
        "-" if loss is None else f"{loss:.3f}",
        checkpoints,
        str(status.get("attempt", 0)),
        age(created),
        status.get("message", ""),
    ]


def describe(
    kind: Annotated[str, typer.Argument(help="Model, TrainingJob, Prompt, ...")],
    name: Annotated[str, typer.Argument()],
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    events: Annotated[int, typer.Option(help="How many recent events to show.")] = 20,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Show one resource in detail: its spec, conditions, replicas and recent events."""
    kind = _kind(kind)
    answer = call(state_dir, "GET", f"/describe/{kind}/{namespace}/{name}?events={events}")
    resource, stamps = answer["resource"], answer["stamps"]
    status = resource.get("status", {})
    created = stamps.get("createdAt", "")
    typer.echo(f"Name:         {name}")
    typer.echo(f"Namespace:    {namespace}")
    typer.echo(f"Kind:         {kind}")
    for key, value in sorted(resource["metadata"].get("labels", {}).items()):
        typer.echo(f"Label:        {key}={value}")
    typer.echo(f"Created:      {created} ({age(created)} ago)")
    typer.echo(f"Generation:   {stamps.get('generation', '-')}")
    if kind == "Model":
        typer.echo(
            f"Replicas:     {status.get('readyReplicas', 0)} ready / "
            f"{status.get('replicas', 0)} running / {status.get('desiredReplicas', 0)} desired"
        )
        for url in status.get("endpoints", []):
            typer.echo(f"Endpoint:     {url}")
    typer.echo("Spec:")
    for line in _yaml_text(_without_nulls(resource["spec"])).splitlines():
        typer.echo(f"  {line}")
    typer.echo("Conditions:")
    conditions = status.get("conditions", [])
    if conditions:
        print_table(
            ["  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            [
                [f"  {c['type']}", c["status"], c.get("reason", ""),
                 age(c.get("lastTransitionTime", "")), c.get("message", "")]
                for c in conditions
            ],
        )  # fmt: skip
    else:
        typer.echo("  <none>")
    if kind == "Model":
        typer.echo("Replicas:")
        if answer["replicas"]:
            print_table(
                ["  ID", "PHASE", "URL", "PID", "RESTARTS", "MESSAGE"],
                [
                    [f"  {r['id']}", r["phase"], r["url"] or "-", str(r["pid"] or "-"),
                     str(r["restarts"]), r["message"]]
                    for r in answer["replicas"]
                ],
            )  # fmt: skip
        else:
            typer.echo("  <none>")
    typer.echo("Events:")
    if answer["events"]:
        print_table(
            ["  AGE", "REPLICA", "EVENT", "MESSAGE"],
            [[f"  {age(e['at'])}", e["replica"], e["event"], e["message"]]
             for e in answer["events"]],
        )  # fmt: skip
    else:
        typer.echo("  <none>")


def _without_nulls(data: Any) -> Any:
    """``data`` without unset (null) fields or empty maps, which say nothing in a summary."""
    if isinstance(data, dict):
        kept = {k: _without_nulls(v) for k, v in data.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    if isinstance(data, list):
        return [_without_nulls(v) for v in data]
    return data


def _yaml_text(data: Any) -> str:
    import io

    from ruamel.yaml import YAML

    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, buffer)
    return buffer.getvalue()


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
        typer.echo(f"{kind_.lower()}/{name_} deleted")


def logs(
    model: Annotated[
        str, typer.Argument(help="Model name, or trainingjob/NAME for a job's driver log.")
    ],
    replica: Annotated[str | None, typer.Option(help="One replica id; default all.")] = None,
    tail: Annotated[int, typer.Option(help="Lines per replica (or of the access log).")] = 100,
    follow: Annotated[
        bool,
        typer.Option("-f", "--follow", help="Keep printing new lines until Ctrl-C or `down`."),
    ] = False,
    access: Annotated[
        bool,
        typer.Option("--access", help="The model's access log: one line per request."),
    ] = False,
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Print the engine logs of a model's replicas, its access log (--access), or the driver
    log of a TrainingJob (`kapell logs trainingjob/NAME`)."""
    kind, _, job = model.rpartition("/")
    if kind:
        if _kind(kind) != "TrainingJob":
            raise KapellError(f"logs are kept for models and trainingjob/NAME, not {kind!r}")
        _print_log(state_dir, f"/trainlogs/{namespace}/{job}", tail, follow)
        return
    if access:
        _print_log(state_dir, f"/access/{model}", tail, follow)
        return

    def replica_ids() -> list[str]:
        if replica is not None:
            return [replica]
        status = call(state_dir, "GET", "/status")
        return [r["id"] for r in status["replicas"] if r["model_key"].endswith(f"/{model}")]

    ids = replica_ids()
    if follow:
        _follow(
            state_dir, lambda: [f"/logs/{i}" for i in replica_ids()], tail, prefix=replica is None
        )
        return
    if not ids:
        raise KapellError(f"model {model!r} has no replica; `kapell get` lists models")
    for replica_id in ids:
        answer = call(state_dir, "GET", f"/logs/{replica_id}?tail={tail}")
        typer.echo(f"==> {replica_id} ({answer['path']}) <==")
        for line in answer["lines"]:
            typer.echo(line)


def _print_log(state_dir: Path, path: str, tail: int, follow: bool) -> None:
    """One log of the admin API: its last ``tail`` lines, or followed."""
    if follow:
        _follow(state_dir, lambda: [path], tail, prefix=False)
        return
    for line in call(state_dir, "GET", f"{path}?tail={tail}")["lines"]:
        typer.echo(line)


def _follow(state_dir: Path, sources: Callable[[], list[str]], tail: int, prefix: bool) -> None:
    """``tail -f`` over the admin API's log paths: the last ``tail`` lines of each, then new
    lines as they come; a source that appears later (a new replica) from its start. Returns
    on Ctrl-C or when the instance stops."""
    offsets: dict[str, int] = {}
    current: list[str] = []
    first = True
    # Ctrl-C ends a follow even where the shell started us with SIGINT ignored (a background
    # job of a non-interactive shell), which Python would otherwise inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            try:
                current = sources()
                for path in current:
                    if path in offsets:
                        answer = call(state_dir, "GET", f"{path}?offset={offsets[path]}")
                    elif first:
                        answer = call(state_dir, "GET", f"{path}?tail={tail}&follow=1")
                    else:
                        answer = call(state_dir, "GET", f"{path}?offset=0")
                    offsets[path] = answer["offset"]
                    label = path.rsplit("/", 1)[-1] + " | " if prefix else ""
                    for line in answer["lines"]:
                        typer.echo(f"{label}{line}")
            except NotRunningError:
                typer.echo("kapell: the instance stopped", err=True)
                return
            except NotFoundError:
                pass  # a replica gone between listing and reading: the next round drops it
            for gone in set(offsets) - set(current):
                del offsets[gone]
            first = False
            sys.stdout.flush()
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return


def status(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Show the running instance: its addresses, models and replicas."""
    info = call(state_dir, "GET", "/status")
    typer.echo(f"kapell {info['version']} (pid {info['pid']})")
    typer.echo(f"  gateway: {info['gateway_url']}  (OpenAI API: {info['gateway_url']}/v1)")
    typer.echo(f"  admin:   {info['admin_url']}")
    if "console_url" in info:  # an instance started by an older kapell has none
        typer.echo(f"  console: {info['console_url']}")
    typer.echo(f"  state:   {info['state_dir']}")
    typer.echo("")
    print_table(
        ["REPLICA", "MODEL", "PHASE", "URL", "RESTARTS", "MESSAGE"],
        [
            [r["id"], r["model_key"].rsplit("/", 1)[-1], r["phase"], r["url"] or "-",
             str(r["restarts"]), r["message"]]
            for r in info["replicas"]
        ],
    )  # fmt: skip
    if info["events"]:
        typer.echo("\nrecent events")
        print_table(
            ["  TIME", "REPLICA", "EVENT", "MESSAGE"],
            [[f"  {e['at']}", e["replica"], e["event"], e["message"]] for e in info["events"]],
        )
