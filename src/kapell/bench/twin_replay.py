"""One replay of a trace through kapell's production control plane, on a virtual clock.

The serving twin is a composition, like ``kapell up``: the same ``ModelController`` driven by
the same ``ReconcileLoop``, the same ``PolicyScaler`` (with the one autoscaler factory and the
one ``demand_sample``), the same ``PolicySizer`` for ``gpu: auto`` Models (measuring in the
latency model, as ``kapell up`` does), the same activator (``gateway.activator.ModelGate``)
over the same ``StaticEndpointSource``, and the same ``gateway.balancer.Balancer``, all
unchanged, on a ``VirtualClockLoop``. Only the replicas are simulated
(``backends.sim.twin.SimReplicas``) and the HTTP path is left out: a trace request enters where
the gateway's proxy would hand it to the activator, with the prompt and output lengths the
trace gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from kapell.api import Resource, TrainingJob
from kapell.api.kinds import TrainingJobStatus
from kapell.api.model import Model
from kapell.backends.sim.clock import VirtualClockLoop
from kapell.backends.sim.gpus import SimGpuPool
from kapell.backends.sim.sizing import LatencyModelSizes
from kapell.backends.sim.training import SimTraining, SimTrainingSettings, SimTrainingStats
from kapell.backends.sim.twin import SimReplicas, SimSettings
from kapell.control.loop import ReconcileLoop
from kapell.control.model import ModelController, revision_of
from kapell.control.scaling import PolicyScaler
from kapell.control.sizing import PolicySizer
from kapell.control.training import TrainingJobController
from kapell.control.training_schedule import Feeds, job_gpus
from kapell.control.trough import TroughArbiter, replica_gpus
from kapell.engines.sim.batcher import SimSequence
from kapell.gateway.activator import ModelGate
from kapell.gateway.balancer import Balancer
from kapell.gateway.config import GatewayConfig
from kapell.gateway.demand import demand_sample
from kapell.gateway.endpoints import StaticEndpointSource
from kapell.gateway.errors import GatewayError
from kapell.gateway.metering import Meter
from kapell.policy.autoscale import DemandSample, Tune

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""What virtual time 0 is in status timestamps."""


class TraceRequestLike(Protocol):
    """What the twin reads of a request (``kapell.bench.traces.TraceRequest`` fits)."""

    @property
    def arrival_s(self) -> float: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def prefix_blocks(self) -> tuple[int, ...]: ...


@dataclass
class RequestRecord:
    """What happened to one request, in virtual seconds (-1: never)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    first_token_s: float = -1.0
    finish_s: float = -1.0
    cached_tokens: int = 0
    waited_for_replica: bool = False
    status: int = 200
    """What the gateway would have answered (429/503 from the activator, 502 if no replica)."""


@dataclass
class TwinRun:
    """The outcome of one replay."""

    requests: list[RequestRecord]
    timeline: list[tuple[float, int, int, int]]
    """``(t_s, ready, gpu_holding, desired)`` after every reconcile."""
    sizes: list[tuple[float, str]] = field(default_factory=list)
    """``(t_s, replica size)`` whenever the Model's size changed (``status.replicaSize``: only
    a ``gpu: auto`` Model has one)."""
    gpu_seconds_by_window: list[tuple[float, float]] = field(default_factory=list)
    """``(t_s, gpu_seconds so far)`` after every reconcile, to integrate any window."""
    sleeping_gpu_seconds: float = 0.0
    cold_starts: int = 0
    wakes: int = 0
    training: SimTrainingStats | None = None
    """What the opportunistic job did (``TwinConfig.trough``)."""
    training_timeline: list[tuple[float, int]] = field(default_factory=list)
    """``(t_s, GPUs the job holds)`` after every reconcile of it."""
    training_status: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TwinConfig:
    """Everything a replay depends on besides the trace and the Model."""

    replicas: SimSettings
    initial_replicas: int = 1
    """Replicas ready when the replay begins (a static fleet is born at full size)."""
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    tune: Tune | None = None
    """Autoscaler knobs beyond the Model's spec (``tuned_config``'s ``tune``)."""
    trough: TroughTwin | None = None
    """An opportunistic TrainingJob on the serving fleet's idle GPUs (None: serving alone)."""


@dataclass(frozen=True)
class TroughTwin:
    """A pool of ``pool_gpus`` the serving fleet owns, and an opportunistic job borrowing it."""

    pool_gpus: int
    job: TrainingJob
    training: SimTrainingSettings
    reserve_gpus: int = 1


class _Store:
    """The controllers' ``Store`` for a replay: the Model (and a TrainingJob), statuses in
    memory. The job is read back with its status (its controller goes by it)."""

    def __init__(self, *resources: Resource) -> None:
        self.resources = {r.key: r for r in resources}
        self.statuses: dict[str, dict[str, object]] = {}

    def get(self, key: str) -> Resource | None:
        resource = self.resources.get(key)
        if isinstance(resource, TrainingJob) and key in self.statuses:
            status = TrainingJobStatus.model_validate(self.statuses[key])
            return resource.model_copy(update={"status": status})
        return resource

    def set_status(self, key: str, status: dict[str, object]) -> None:
        self.statuses[key] = status


class Twin:
    """One replay of ``requests`` for ``model`` under ``config``; ``replay()`` runs it."""

    def __init__(
        self,
        config: TwinConfig,
        requests: Sequence[TraceRequestLike],
        model: Model,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.requests = requests
        self.model = model
        self.progress = progress
        self.records = [
            RequestRecord(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in requests
        ]
        self.run = TwinRun(requests=self.records, timeline=[])
        self.desired = 0
        """The scaler's latest decision."""

    def replay(self) -> TwinRun:
        loop = VirtualClockLoop()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()
        return self.run

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        model, name, config = self.model, self.model.metadata.name, self.config
        trough = config.trough
        store = _Store(model, *([trough.job] if trough else []))
        meter = Meter()
        pool = SimGpuPool(trough.pool_gpus) if trough else None

        def on_change(key: str) -> None:
            source.set_endpoints(name, backend.ready_endpoints(key))
            reconciler.enqueue(key)

        def on_first_token(seq: SimSequence) -> None:
            record = self.records[seq.tag]
            record.first_token_s = loop.time()
            record.cached_tokens = seq.cached_tokens

        def reconcile(key: str) -> float | None:
            if trainer is not None and key.startswith("TrainingJob/"):
                requeue_s = trainer.reconcile(key)
                held = job_gpus(trainer_job) if key in training_holding() else 0
                self.run.training_timeline.append((loop.time(), held))
                return requeue_s
            requeue_after_s = controller.reconcile(key)
            ready = len(backend.ready_endpoints(key))
            now_s = loop.time()
            size = store.statuses.get(key, {}).get("replicaSize")
            if isinstance(size, str) and (not self.run.sizes or self.run.sizes[-1][1] != size):
                self.run.sizes.append((now_s, size))
            self.run.timeline.append((now_s, ready, backend.holding(key), self.desired))
            self.run.gpu_seconds_by_window.append((now_s, backend.gpu_seconds()))
            return requeue_after_s

        def decided(model: Model, replicas: int) -> None:
            self.desired = replicas
            if arbiter is not None:
                arbiter.observe_decision(model, replicas)

        backend = SimReplicas(config.replicas, loop, on_change, on_first_token, pool)
        trainer: TrainingJobController | None = None
        arbiter: TroughArbiter | None = None
        training: SimTraining | None = None
        if trough is not None and pool is not None:
            trainer_job = trough.job
            arbiter = TroughArbiter(
                trough.pool_gpus,
                lambda: backend.holding(model.key) * replica_gpus(model),
                trough.reserve_gpus,
                on_squeeze=lambda key: reconciler.enqueue(key),
            )
            training = SimTraining(
                trough.training, loop, pool, job_gpus, lambda key: reconciler.enqueue(key)
            )
            trainer = TrainingJobController(
                store, training, _timestamp(loop), Feeds(clock=loop.time, trough=arbiter)
            )

        def training_holding() -> set[str]:
            return set() if training is None else training.holding()

        source = StaticEndpointSource(
            models=[model], on_capacity_request=lambda _: reconciler.enqueue(model.key)
        )

        def demand(m: Model, ready: int) -> DemandSample:
            return demand_sample(
                meter.snapshot(m.metadata.name), ready, backend.engine_waiting(m.key)
            )

        def cold_start_s(m: Model) -> float:
            return backend.cold_start_s(m.key)

        scaler = PolicyScaler(demand, cold_start_s, on_decision=decided, tune=config.tune)
        sizer = PolicySizer(lambda m: demand(m, 0), LatencyModelSizes(), cold_start_s)
        controller = ModelController(
            store, backend, scaler, loop.time, _timestamp(loop), sizer=sizer
        )
        reconciler = ReconcileLoop(reconcile, clock=loop.time)
        gateway = config.gateway
        gate = ModelGate(
            name,
            source,
            meter.usage(name),
            queue_max=gateway.queue_max_per_model,
            per_replica=gateway.max_in_flight_per_replica,
            timeout_s=gateway.activation_timeout_s,
        )
        balancer = Balancer(
            affinity_blocks=gateway.prefix_affinity_blocks,
            cooldown_s=gateway.failed_endpoint_cooldown_s,
            clock=loop.time,
        )
        exchange = _Exchange(model, source, gate, meter, balancer, backend)
        born, _ = controller.with_size(model)  # an auto fleet is born at the size picked now
        backend.preload(born, revision_of(born), config.initial_replicas)
        reconciler.enqueue(model.key)
        if trough is not None:
            reconciler.enqueue(trough.job.key)
        reconciling = loop.create_task(reconciler.run())
        tasks = []
        end_s = self.requests[-1].arrival_s if self.requests else 0.0
        for index, request in enumerate(self.requests):
            await asyncio.sleep(request.arrival_s - loop.time())
            tasks.append(loop.create_task(exchange.serve(request, self.records[index], index)))
            if self.progress is not None and index % 256 == 0 and end_s > 0:
                self.progress(min(request.arrival_s / end_s, 1.0))
        await asyncio.gather(*tasks)
        reconciling.cancel()
        await asyncio.gather(reconciling, return_exceptions=True)
        await gate.close()
        self.run.gpu_seconds_by_window.append((loop.time(), backend.gpu_seconds()))
        self.run.sleeping_gpu_seconds = backend.sleeping_gpu_seconds
        self.run.cold_starts = backend.cold_starts
        self.run.wakes = backend.wakes
        if training is not None and trough is not None:
            training.close()
            self.run.training = training.stats
            self.run.training_status = store.statuses.get(trough.job.key, {})


@dataclass
class _Exchange:
    """A trace request's trip as the gateway's proxy makes it, with the replica simulated."""

    model: Model
    source: StaticEndpointSource
    gate: ModelGate
    meter: Meter
    balancer: Balancer
    backend: SimReplicas

    async def serve(self, request: TraceRequestLike, record: RequestRecord, index: int) -> None:
        name = self.model.metadata.name
        usage = self.meter.usage(name)
        usage.arrive(request.prompt_tokens, request.output_tokens)
        record.waited_for_replica = not self.source.ready_endpoints(name)
        try:
            await self.gate.acquire()
        except GatewayError as error:
            record.status = error.status
            usage.requests += 1
            return
        try:
            record.status = await self._forward(request, index)
        finally:
            self.gate.release()
            usage.requests += 1
        if record.status == 200:
            record.finish_s = asyncio.get_running_loop().time()
            usage.prompt_tokens += request.prompt_tokens
            usage.generated_tokens += request.output_tokens

    async def _forward(self, request: TraceRequestLike, index: int) -> int:
        tokens = request.prompt_tokens + request.output_tokens
        endpoint = self.balancer.choose(
            self.model,
            self.source.ready_endpoints(self.model.metadata.name),
            tokens,
            lambda: request.prefix_blocks,
        )
        if endpoint is None:
            return 502  # the gateway's answer when no ready replica is left
        counts = self.balancer.counts(endpoint)
        counts.tokens += tokens
        counts.requests += 1
        seq = SimSequence(
            request.prompt_tokens, request.output_tokens, request.prefix_blocks, tag=index
        )
        try:
            await self.backend.submit(endpoint.replica_id, seq)
        finally:
            counts.tokens -= tokens
            counts.requests -= 1
        return 200


def _timestamp(loop: asyncio.AbstractEventLoop) -> Callable[[], str]:
    """RFC 3339 timestamps on the virtual clock, for status conditions."""
    return lambda: (_EPOCH + timedelta(seconds=loop.time())).isoformat()
