"""``kapell up``: wire the local mode together and run it until Ctrl-C or ``kapell down``.

One asyncio process holds the SQLite store, the reconcile loop with the Model, TrainingJob and
Prompt controllers, the replica supervisor, the local Ray runner, the admin API and the gateway.
Replicas and Ray nodes are child processes that die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from starlette.applications import Starlette
from starlette.routing import Mount

from kapell import __version__
from kapell.api import Model, Prompt, Resource, Tenant, VectorStore
from kapell.api.errors import BackendError
from kapell.api.replica import ReplicaPhase
from kapell.api.units import parse_quantity
from kapell.backends.local.admin import AdminContext, create_admin_app
from kapell.backends.local.endpoints import routable
from kapell.backends.local.engine_load import EngineWaiting
from kapell.backends.local.replicas import HOST, LocalReplicas
from kapell.backends.local.spend import SpendLedger
from kapell.backends.local.store import SQLiteStore, utc_now
from kapell.backends.local.training import LocalRayJobs
from kapell.backends.sim.sizing import LatencyModelSizes
from kapell.cli.accounting import Accountant
from kapell.cli.client import INSTANCE_FILE, state_dir_default
from kapell.cli.console_local import LocalConsole
from kapell.cli.serving import bind, server
from kapell.console.app import CONSOLE_PATH, console_app
from kapell.control.loop import ReconcileLoop
from kapell.control.model import ModelController
from kapell.control.prompt import PromptController
from kapell.control.scaling import PolicyScaler
from kapell.control.sizing import PolicySizer
from kapell.control.training import TrainingJobController
from kapell.control.training_schedule import Feeds
from kapell.control.trough import TroughArbiter, replica_gpus
from kapell.gateway.app import create_app
from kapell.gateway.config import GatewayConfig
from kapell.gateway.demand import demand_sample
from kapell.gateway.endpoints import StaticEndpointSource
from kapell.gateway.server import tune_gc
from kapell.gateway.tenancy import tenant_configs
from kapell.net import free_port
from kapell.observe.access_log import AccessLog, AccessRecord
from kapell.observe.energy_metrics import EnergyCollector
from kapell.observe.power import GpuEnergyMeter, meter_gpus, read_nvml
from kapell.observe.spend_metrics import SpendCollector
from kapell.policy.autoscale import DemandSample
from kapell.policy.carbon.series import HourlySeries
from kapell.policy.energy import EnergyRow, default_power_models, energy_report
from kapell.policy.energy import ModelUsage as EnergyUsage

console = Console(stderr=True, highlight=False)
SHUTDOWN_LIMIT_S = 30.0
"""Longest a graceful stop of all replicas may take before they are killed."""


@dataclass(frozen=True)
class TrainingOptions:
    """What the TrainingJob scheduler observes (``cli.training_feeds``); None turns it off."""

    spot_available: Callable[[float], bool] | None = None
    carbon: Callable[[float], HourlySeries] | None = None
    serving_gpus: int | None = None


async def run(
    resources: list[Resource],
    state_dir: Path,
    port: int,
    intensity: Callable[[float], float],
    carbon_option: str | None = None,
    training_options: TrainingOptions | None = None,
    gateway_config: GatewayConfig | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM or an admin shutdown; leaves no child process behind.

    ``carbon_option`` is ``--carbon-intensity`` as given (``intensity`` is read from it); the
    console names it. ``gateway_config``: the gateway's drift windows and tracing (default:
    ``GatewayConfig()``)."""
    options = training_options or TrainingOptions()
    state_dir.mkdir(parents=True, exist_ok=True)
    instance_path = state_dir / INSTANCE_FILE
    gateway_sock = bind(HOST, port, "the gateway")
    admin_sock = bind(HOST, free_port(HOST), "the admin API")
    store = SQLiteStore(state_dir / "state.db")

    def demand(model: Model, ready: int) -> DemandSample:
        usage = gateway.state.gateway.meter.snapshot(model.metadata.name)
        return demand_sample(usage, ready, engine_waiting.of(model.key))

    decided: dict[str, int] = {}

    def publish_desired(model: Model, replicas_desired: int) -> None:
        """Show the autoscaler's decision on /metrics, and record a change of it as an event
        (`kapell describe`, the console), beside the replica events it leads to."""
        gateway.state.gateway.set_replicas_desired(model.metadata.name, replicas_desired)
        before = decided.get(model.key, model.status.desired_replicas)
        decided[model.key] = replicas_desired
        if replicas_desired != before:
            store.record_event(
                model.key, "-", "Scaled", f"desired replicas {before} -> {replicas_desired}"
            )
        if arbiter is not None:
            arbiter.observe_decision(model, replicas_desired)

    def reconciler_enqueue(key: str) -> None:
        reconciler.enqueue(key)

    def serving_gpus_held() -> int:
        """GPUs serving replicas hold: every replica but those backing off after a crash."""
        return sum(
            replica_gpus(model)
            * sum(r.phase is not ReplicaPhase.BACKOFF for r in replicas.replicas(model.key))
            for model in store.resources("Model")
            if isinstance(model, Model)
        )

    arbiter = (
        TroughArbiter(options.serving_gpus, serving_gpus_held, on_squeeze=reconciler_enqueue)
        if options.serving_gpus
        else None
    )

    scaler = PolicyScaler(
        demand, lambda model: replicas.cold_start_s(model.key), on_decision=publish_desired
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def publish() -> None:
        """Tell the gateway what it may route to, and which models cannot start."""
        routes = routable(store, replicas)
        endpoints.set_models(routes.models)
        for name, ready_endpoints in routes.ready.items():
            endpoints.set_endpoints(name, ready_endpoints)
            endpoints.set_unavailable(name, routes.cannot_start.get(name))

    said = [""]

    def refresh_tenants() -> None:
        """Give the gateway the Tenants and keys in the store (after any change to them), and
        say on the console when that changes who it serves (open, tenants and keys)."""
        table = gateway.state.gateway.tenants
        tenants = [t for t in store.resources("Tenant") if isinstance(t, Tenant)]
        table.update(tenant_configs(tenants, store.api_keys()))
        if table.summary() != said[0]:
            said[0] = table.summary()
            console.print(f"kapell {said[0]}", soft_wrap=True)

    def refresh_prompts() -> None:
        """Give the gateway every Prompt, all its versions and the weights last decided."""
        prompts = [p for p in store.resources("Prompt") if isinstance(p, Prompt)]
        gateway.state.gateway.prompts.update((p, store.prompt_versions(p.key)) for p in prompts)

    def declare_vector_stores() -> None:
        """Give the gateway's vector stores the VectorStore resources in the store."""
        assert vectors is not None
        vectors.declare([r for r in store.resources("VectorStore") if isinstance(r, VectorStore)])

    def on_change(key: str) -> None:
        if key.startswith("Tenant/"):  # applied, deleted, or a key created or revoked
            refresh_tenants()
            return
        if key.startswith("Budget/"):  # a job applied with it must not start before its verdict
            accountant.refresh()
            return
        if key.startswith("Prompt/"):
            refresh_prompts()
            reconciler.enqueue(key)
            return
        if key.startswith("VectorStore/"):
            declare_vector_stores()
            return
        publish()
        reconciler.enqueue(key)

    def reconcile(key: str) -> float | None:
        if key.startswith("TrainingJob/"):
            return trainer.reconcile(key)
        if key.startswith("Prompt/"):
            requeue_prompt_s = prompter.reconcile(key)
            refresh_prompts()  # the weights it wrote
            return requeue_prompt_s
        requeue_after_s = controller.reconcile(key)
        publish()  # the status it wrote may say the model cannot start (or can again)
        return requeue_after_s

    def on_demand(name: str) -> None:
        model = endpoints.model(name)
        if model is not None:  # the controller samples the activator's queue at once
            reconciler.enqueue(model.key)

    replicas = LocalReplicas(
        state_dir / "logs", on_change, store.record_event, lambda: store.next_number("replica")
    )
    controller = ModelController(
        store,
        replicas,
        scaler,
        time.monotonic,
        utc_now,
        over_budget=lambda model: accountant.over_budget(model.metadata.namespace),
        sizer=PolicySizer(
            lambda model: demand(model, 0),
            LatencyModelSizes(),
            lambda model: replicas.cold_start_s(model.key),
        ),
    )
    training = LocalRayJobs(
        state_dir / "logs", state_dir / "checkpoints", lambda key: reconciler.enqueue(key),
        store.record_event,
    )  # fmt: skip
    feeds = Feeds(spot_available=options.spot_available, carbon=options.carbon, trough=arbiter)
    trainer = TrainingJobController(
        store,
        training,
        utc_now,
        over_budget=lambda job: accountant.over_budget(job.metadata.namespace),
        feeds=feeds,
    )
    prompter = PromptController(
        store, lambda key: gateway.state.gateway.prompts.counts(key), time.time, utc_now
    )
    reconciler = ReconcileLoop(reconcile)
    endpoints = StaticEndpointSource(on_capacity_request=on_demand)
    engine_waiting = EngineWaiting(
        lambda: [m for m in store.resources("Model") if isinstance(m, Model)], replicas.replicas
    )
    access_log = AccessLog(state_dir / "logs")

    def finished(record: AccessRecord) -> None:
        access_log(record)
        console_source.add_latency(record)

    gateway = create_app(
        endpoints, gateway_config or GatewayConfig(), finished, vectors_dir=state_dir / "vectors"
    )
    vectors = gateway.state.gateway.vectors

    gateway_url = f"http://{HOST}:{gateway_sock.getsockname()[1]}"
    admin_url = f"http://{HOST}:{admin_sock.getsockname()[1]}"
    info = {
        "version": __version__,
        "pid": os.getpid(),
        "gateway_url": gateway_url,
        "admin_url": admin_url,
        "console_url": f"{admin_url}{CONSOLE_PATH}/",
        "state_dir": str(state_dir.resolve()),
        "carbon_intensity": _absolute(carbon_option),  # for `kapell mcp`'s carbon planning
    }

    gpu_meter = _gpu_meter()

    def usage() -> list[dict[str, Any]]:
        """Per-model usage for `kapell energy report`: what ran, how long, how many tokens."""
        rows = []
        for model in store.resources("Model"):
            assert isinstance(model, Model)
            metered = gateway.state.gateway.meter.snapshot(model.metadata.name)
            gpu = model.spec.resources.gpu
            rows.append({
                "model": model.metadata.name,
                "engine": model.spec.engine.name,
                "gpu_model": gpu.models[0] if gpu is not None and gpu.models else None,
                "gpu_milli": gpu.milli_gpus if gpu is not None else 0,
                "cpu_cores": parse_quantity(model.spec.resources.cpu),
                "replicas": model.status.ready_replicas,
                "replica_seconds": replicas.ready_seconds(model.key),
                "busy_seconds": metered.busy_seconds(time.monotonic()),
                "requests": metered.requests,
                "prompt_tokens": metered.prompt_tokens,
                "generated_tokens": metered.generated_tokens,
                "request_energy_j": metered.request_energy_j,
            })  # fmt: skip
            if gpu_meter is not None and model.metadata.name in gpu_meter.joules:
                rows[-1]["measured_j"] = gpu_meter.joules[model.metadata.name]
        return rows

    power_models = default_power_models()

    def energy() -> list[EnergyRow]:
        return energy_report([EnergyUsage.from_json(r) for r in usage()], power_models)

    ledger = SpendLedger(store.path)
    accountant = Accountant(
        store,
        ledger,
        gateway.state.gateway.meter.tenant_tokens,
        replicas.ready_seconds,
        energy,
        intensity,
    )
    gateway.state.gateway.over_budget = lambda model: accountant.over_budget(
        model.metadata.namespace
    )
    console_source = LocalConsole(
        store,
        replicas,
        gateway.state.gateway.meter.snapshot,
        accountant.report,
        intensity,
        carbon_option,
    )
    admin_api = create_admin_app(
        AdminContext(
            store,
            replicas,
            on_change,
            stop.set,
            info,
            usage,
            access_log.path,
            training_log_path=training.log_path,
            spend=accountant.report,
            drift=gateway.state.gateway.drift.report,
        )
    )
    admin = Starlette(
        routes=[Mount(CONSOLE_PATH, console_app(console_source)), Mount("/", admin_api)]
    )
    registry = gateway.state.gateway.metrics.registry
    registry.register(EnergyCollector(energy))
    registry.register(SpendCollector(accountant.report))

    saved = len(store.resources())
    if saved:
        console.print(f"kapell: resuming {saved} resource(s) saved in {state_dir}")
    for resource in resources:
        store.apply(resource)
    accountant.refresh()  # before any reconcile: saved and new Budgets say who may start work
    refresh_tenants()
    declare_vector_stores()
    for key in store.keys("Model"):
        on_change(key)
    for key in store.keys("TrainingJob"):
        reconciler.enqueue(key)
    for key in store.keys("Prompt"):
        on_change(key)

    servers = [
        (server(gateway, gateway_sock), gateway_sock),
        (server(admin, admin_sock), admin_sock),
    ]
    tune_gc()  # the gateway shares this process; fewer, larger GC passes keep its latency flat
    server_tasks = [loop.create_task(s.serve(sockets=[sock])) for s, sock in servers]
    background = [
        loop.create_task(reconciler.run()),
        loop.create_task(engine_waiting.run()),
        loop.create_task(accountant.run()),
        loop.create_task(console_source.run()),
    ]
    if gpu_meter is not None:
        background.append(loop.create_task(_meter(gpu_meter, replicas)))
    # Written whole, then renamed: a `kapell` command (or a test) reading it never sees half.
    partial = instance_path.with_suffix(".tmp")
    partial.write_text(json.dumps(info, indent=2))
    partial.replace(instance_path)
    console.print(f"kapell {__version__}: state in {state_dir}, admin API on {admin_url}")
    print(f"Gateway: {gateway_url} (OpenAI API at {gateway_url}/v1)", flush=True)
    print(f"Console: {info['console_url']}", flush=True)
    if not store.keys("Model"):
        console.print("kapell: no Model yet; add one with `kapell apply -f FILE`")
    reporter = loop.create_task(
        _report_ready(store, replicas, gateway_url, _chat_command(state_dir))
    )
    try:
        await stop.wait()
    finally:
        # Order matters: no reconcile may start a replica once replicas are being stopped,
        # and the servers stop before the store closes under them.
        console.print("kapell: shutting down replicas... (Ctrl-C again to kill them at once)")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _kill_now, replicas, training)
        for task in (reporter, *background):
            task.cancel()
        await asyncio.gather(reporter, *background, return_exceptions=True)
        try:
            await asyncio.wait_for(
                asyncio.gather(replicas.shutdown(), training.shutdown()), SHUTDOWN_LIMIT_S
            )
        except TimeoutError:
            console.print(f"kapell: replicas still running after {SHUTDOWN_LIMIT_S:.0f}s; killing")
            _kill_now(replicas, training, exit_process=False)
        for running, _ in servers:
            running.should_exit = True
        await asyncio.gather(*server_tasks, return_exceptions=True)
        access_log.close()
        ledger.close()
        store.close()
        with contextlib.suppress(FileNotFoundError):
            instance_path.unlink()
        console.print("kapell: stopped; no replica left running")


def _gpu_meter() -> GpuEnergyMeter | None:
    """A meter of GPU joules per model when NVML can read this machine's GPUs, else None."""
    try:
        gpus = read_nvml()
    except BackendError as exc:
        console.print(f"kapell: energy is modelled ({exc})")
        return None
    if not gpus:
        console.print("kapell: energy is modelled (NVML sees no GPU)")
        return None
    console.print(f"kapell: energy of GPU models is measured with NVML ({len(gpus)} GPU(s))")
    return GpuEnergyMeter()


async def _meter(meter: GpuEnergyMeter, replicas: LocalReplicas) -> None:
    try:
        await meter_gpus(meter, replicas.pid_models)
    except BackendError as exc:
        console.print(f"kapell: NVML stopped answering ({exc}); energy is modelled from now on")


def _kill_now(replicas: LocalReplicas, training: LocalRayJobs, exit_process: bool = True) -> None:
    """SIGKILL every replica process and every Ray node's processes (a second Ctrl-C, or a
    shutdown that overran)."""
    for pid in replicas.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    training.kill_now()
    if exit_process:
        console.print("kapell: killed every replica")
        os._exit(130)


def _chat_command(state_dir: Path) -> str:
    """How to run ``kapell chat`` against this instance, as the user would type it."""
    program = sys.argv[0] if Path(sys.argv[0]).name == "kapell" else "kapell"
    options = (
        "" if state_dir.resolve() == state_dir_default().resolve() else f" --state-dir {state_dir}"
    )
    return f"{program} chat{options}"


async def _report_ready(
    store: SQLiteStore, replicas: LocalReplicas, gateway_url: str, chat: str
) -> None:
    """Print each Model once when it first has a ready replica, with an example call.

    Readiness is read from the live replicas, not the stored status, which a resumed state
    directory holds from its last run until the first reconcile rewrites it.
    """
    announced: set[str] = set()
    first = True
    while True:
        for model in store.resources("Model"):
            assert isinstance(model, Model)
            ready = sum(r.ready for r in replicas.replicas(model.key))
            if model.key in announced or ready == 0:
                continue
            announced.add(model.key)
            name = model.metadata.name
            console.print(
                f"[green]ready[/green] model {name}: {ready} replica(s) behind {gateway_url}/v1"
            )
            if first:
                first = False
                print(
                    f"\nTry:\n  {chat} {name}\nor:\n  curl -s {gateway_url}/v1/chat/completions "
                    "-H 'Content-Type: application/json' \\\n"
                    f'    -d \'{{"model": "{name}", "messages": '
                    '[{"role": "user", "content": "ROMEO:"}], "max_tokens": 60}\'\n'
                    "Stop with Ctrl-C or `kapell down`.\n",
                    flush=True,
                )
        await asyncio.sleep(0.5)


def _absolute(carbon_option: str | None) -> str | None:
    """``--carbon-intensity`` as another process reads it: a file named by its absolute path."""
    if carbon_option is not None and Path(carbon_option).is_file():
        return str(Path(carbon_option).resolve())
    return carbon_option
