"""The serving digital twin: a discrete-event simulation of a model's replicas under a trace.

A virtual clock moves from event to event (arrivals, iteration ends, replicas becoming ready,
autoscaler ticks). Decisions are kapell's own: ``kapell.policy.routing`` picks the replica for
every request from the same load counters the gateway keeps, and a
``kapell.policy.autoscale.Autoscaler`` gets the same ``DemandSample`` the control loop feeds
it, every ``tick_s``: tokens and requests counted at completion, as the gateway's meter does,
and tokens counted at admission (prompt plus the mean output of finished requests, as the
router estimates before a request runs). Requests that find no ready replica wait in an activator queue, as in
the gateway, and are dispatched when one becomes ready.

Replicas come from the latency model (``kapell.engines.sim``), the one the ``sim`` engine
serves with. Scaling up wakes a sleeping (warm-tier) replica first, in ``wake_s``, and cold
starts one otherwise, in ``cold_start_s`` (jittered by up to 10% from the seed); scaling down
drains the least-loaded replica, which then sleeps if the warm tier has room, else stops.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kapell.backends.sim.replica import PendingStep, ReplicaState, SimReplica
from kapell.engines.sim.batcher import SimSequence
from kapell.engines.sim.latency import LatencyProfile
from kapell.policy import routing
from kapell.policy.autoscale import Autoscaler, DemandSample

ROUTERS = ("least-tokens", "prefix-affinity", "round-robin")
EXPECTED_OUTPUT_TOKENS = 256
"""Output tokens assumed per request before any has finished (the gateway's default)."""


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


@dataclass(frozen=True)
class TwinConfig:
    """Everything a replay depends on besides the trace and the autoscaler."""

    profile: LatencyProfile
    router: str = "least-tokens"
    prefix_load_bound: float = 1.25
    prefix_block_tokens: int = 512
    max_replicas: int = 64
    initial_replicas: int = 1
    cold_start_s: float | None = None
    """None: the profile's cold start."""
    wake_s: float | None = None
    warm_tier: int = 0
    """Replicas kept asleep after scale-down, to wake in ``wake_s`` instead of a cold start."""
    tick_s: float = 2.0
    seed: int = 0
    gpu_fraction: float = 1.0
    """Share of a GPU one replica is billed (a MIG slice: g/7); GPU-seconds count by it."""


@dataclass
class RequestRecord:
    """What happened to one request, in virtual seconds."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    first_token_s: float = -1.0
    finish_s: float = -1.0
    cached_tokens: int = 0
    waited_for_replica: bool = False


@dataclass
class TwinRun:
    """The outcome of one replay."""

    requests: list[RequestRecord]
    timeline: list[tuple[float, int, int, int]]
    """``(t_s, ready, gpu_holding, desired)`` at every autoscaler tick."""
    gpu_seconds_by_window: list[tuple[float, float]] = field(default_factory=list)
    """``(t_s, gpu_seconds so far)`` at every tick, to integrate any window."""
    sleeping_gpu_seconds: float = 0.0
    cold_starts: int = 0
    wakes: int = 0


_ARRIVAL, _STEP, _READY, _TICK = 0, 1, 2, 3


class Twin:
    """One replay of ``requests`` through kapell's router and the given autoscaler."""

    def __init__(
        self,
        config: TwinConfig,
        requests: Sequence[TraceRequestLike],
        autoscaler: Autoscaler,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        if config.router not in ROUTERS:
            raise ValueError(f"unknown router {config.router!r}")
        self.config = config
        self.profile = config.profile
        self.cold_start_s = (
            config.cold_start_s if config.cold_start_s is not None else self.profile.cold_start_s
        )
        self.wake_s = config.wake_s if config.wake_s is not None else self.profile.wake_s
        self.requests = requests
        self.autoscaler = autoscaler
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.replicas: list[SimReplica] = []
        """Replicas that exist (stopped ones leave the list)."""
        self.replicas_created = 0
        self.records = [
            RequestRecord(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in requests
        ]
        self.events: list[tuple[float, int, int, tuple[SimReplica, int] | None]] = []
        self.order = 0
        self.now_s = 0.0
        self.activator: deque[int] = deque()
        self.round_robin_counter = 0
        self.tokens_total = 0
        self.requests_total = 0
        self.generated_total = 0
        self.admitted_tokens = 0.0
        self.in_flight = 0
        self.gpu_seconds = 0.0
        self.sleeping_gpu_seconds = 0.0
        self.last_account_s = 0.0
        self.run = TwinRun(requests=self.records, timeline=[])
        self.desired = config.initial_replicas
        self.end_s = requests[-1].arrival_s if requests else 0.0

    # -- events ---------------------------------------------------------------------------

    def _push(self, at_s: float, kind: int, payload: tuple[SimReplica, int] | None) -> None:
        self.order += 1
        heapq.heappush(self.events, (at_s, self.order, kind, payload))

    def replay(self) -> TwinRun:
        for _ in range(self.config.initial_replicas):
            replica = self._new_replica()
            replica.state = ReplicaState.READY
        self._push(0.0, _TICK, None)
        next_arrival = 0
        n = len(self.requests)
        while True:
            arrival_s = self.requests[next_arrival].arrival_s if next_arrival < n else float("inf")
            if self.events and self.events[0][0] <= arrival_s:
                at_s, _, kind, payload = heapq.heappop(self.events)
                if (
                    kind == _TICK
                    and next_arrival >= n
                    and self.in_flight == 0
                    and not self.activator
                ):
                    self._account(at_s)
                    break
                self._account(at_s)
                self._handle(kind, payload)
            elif next_arrival < n:
                self._account(arrival_s)
                self._arrive(next_arrival)
                next_arrival += 1
            else:
                break
        self.run.sleeping_gpu_seconds = self.sleeping_gpu_seconds
        return self.run

    def _account(self, at_s: float) -> None:
        """Integrate GPU-seconds up to ``at_s`` and move the clock there."""
        dt = at_s - self.last_account_s
        if dt > 0:
            holding = sleeping = 0
            for replica in self.replicas:
                holding += replica.state.holds_gpu
                sleeping += replica.state is ReplicaState.SLEEPING
            self.gpu_seconds += holding * dt * self.config.gpu_fraction
            self.sleeping_gpu_seconds += sleeping * dt * self.config.gpu_fraction
            self.last_account_s = at_s
        self.now_s = at_s

    def _handle(self, kind: int, payload: tuple[SimReplica, int] | None) -> None:
        if kind == _STEP:
            assert payload is not None
            replica, version = payload
            if replica.pending is not None and replica.pending.version == version:
                self._step_done(replica)
        elif kind == _READY:
            assert payload is not None
            replica, version = payload
            if replica.version == version and replica.state in (
                ReplicaState.STARTING,
                ReplicaState.WAKING,
            ):
                replica.state = ReplicaState.READY
                self._drain_activator()
        else:
            self._tick()

    # -- requests -------------------------------------------------------------------------

    def _arrive(self, index: int) -> None:
        self.admitted_tokens += self.requests[index].prompt_tokens + self._expected_output()
        ready = self._routable()
        if not ready:
            self.records[index].waited_for_replica = True
            self.activator.append(index)
            return
        self._dispatch(index, ready)

    def _expected_output(self) -> float:
        """Output tokens the gateway can expect of a new request: the mean of finished ones."""
        if self.requests_total == 0:
            return float(EXPECTED_OUTPUT_TOKENS)
        return self.generated_total / self.requests_total

    def _routable(self) -> list[SimReplica]:
        return [r for r in self.replicas if r.state is ReplicaState.READY]

    def _dispatch(self, index: int, ready: list[SimReplica]) -> None:
        request = self.requests[index]
        expected_tokens = request.prompt_tokens + request.output_tokens
        replica = ready[self._route(request, ready, expected_tokens)]
        replica.outstanding_tokens += expected_tokens
        replica.outstanding_requests += 1
        self.in_flight += 1
        seq = SimSequence(
            request.prompt_tokens, request.output_tokens, request.prefix_blocks, tag=index
        )
        replica.batcher.submit(seq)
        if replica.pending is None:
            self._start_step(replica)
        else:
            cut = replica.cut_run(self.now_s)
            if cut is not None:
                self._schedule(replica, cut)

    def _route(self, request: TraceRequestLike, ready: list[SimReplica], tokens: int) -> int:
        strategy = self.config.router
        if strategy == "round-robin":
            self.round_robin_counter += 1
            return routing.round_robin(len(ready), self.round_robin_counter - 1)
        loads = [
            routing.ReplicaLoad(r.replica_id, r.outstanding_tokens, r.outstanding_requests)
            for r in ready
        ]
        if strategy == "prefix-affinity":
            return routing.prefix_affinity(
                loads,
                request.prefix_blocks,
                request_tokens=tokens,
                load_bound=self.config.prefix_load_bound,
            )
        return routing.least_tokens(loads)

    def _drain_activator(self) -> None:
        ready = self._routable()
        while self.activator and ready:
            self._dispatch(self.activator.popleft(), ready)

    # -- replica steps ----------------------------------------------------------------------

    def _start_step(self, replica: SimReplica) -> None:
        pending = replica.next_step(self.now_s)
        if pending is not None:
            self._schedule(replica, pending)
        elif replica.state is ReplicaState.DRAINING:
            self._retire(replica)

    def _schedule(self, replica: SimReplica, pending: PendingStep) -> None:
        self._push(pending.end_s, _STEP, (replica, pending.version))

    def _step_done(self, replica: SimReplica) -> None:
        result = replica.finish_step()
        for seq in result.first_token:
            record = self.records[seq.tag]
            record.first_token_s = self.now_s
            record.cached_tokens = seq.cached_tokens
        for seq in result.finished:
            index = seq.tag
            record = self.records[index]
            record.finish_s = self.now_s
            replica.outstanding_tokens -= record.prompt_tokens + record.output_tokens
            replica.outstanding_requests -= 1
            self.in_flight -= 1
            self.requests_total += 1
            self.generated_total += record.output_tokens
            self.tokens_total += record.prompt_tokens + record.output_tokens
        self._start_step(replica)

    # -- scaling ----------------------------------------------------------------------------

    def _tick(self) -> None:
        now_s = self.now_s
        ready = sum(r.state is ReplicaState.READY for r in self.replicas)
        waiting = sum(r.batcher.num_waiting for r in self.replicas)
        self.autoscaler.observe(
            now_s,
            DemandSample(
                tokens_total=float(self.tokens_total),
                requests_total=float(self.requests_total),
                in_flight=self.in_flight,
                queue_depth=len(self.activator),
                ready_replicas=ready,
                engine_waiting=waiting,
                admitted_tokens_total=self.admitted_tokens,
            ),
        )
        self.desired = min(self.autoscaler.desired(now_s).replicas, self.config.max_replicas)
        self._scale_to(self.desired)
        holding = sum(r.state.holds_gpu for r in self.replicas)
        self.run.timeline.append((now_s, ready, holding, self.desired))
        self.run.gpu_seconds_by_window.append((now_s, self.gpu_seconds))
        if self.progress is not None and self.end_s > 0:
            self.progress(min(now_s / self.end_s, 1.0))
        self._push(now_s + self.config.tick_s, _TICK, None)

    def _scale_to(self, desired: int) -> None:
        serving = [
            r
            for r in self.replicas
            if r.state in (ReplicaState.STARTING, ReplicaState.WAKING, ReplicaState.READY)
        ]
        missing = desired - len(serving)
        for replica in self.replicas:
            if missing <= 0:
                break
            if replica.state is ReplicaState.DRAINING:
                replica.state = ReplicaState.READY  # still loaded: take it back at once
                missing -= 1
        for replica in self.replicas:
            if missing <= 0:
                break
            if replica.state is ReplicaState.SLEEPING:
                self._begin(replica, ReplicaState.WAKING, self.wake_s)
                self.run.wakes += 1
                missing -= 1
        while missing > 0:
            self._begin(self._new_replica(), ReplicaState.STARTING, self._cold_start_s())
            self.run.cold_starts += 1
            missing -= 1
        if missing < 0:
            self._scale_down(-missing, serving)
        self._drain_activator()

    def _scale_down(self, count: int, serving: list[SimReplica]) -> None:
        not_ready = [r for r in reversed(serving) if r.state is not ReplicaState.READY]
        ready = sorted(
            (r for r in serving if r.state is ReplicaState.READY),
            key=lambda r: (r.outstanding_tokens, r.replica_id),
        )
        for replica in (not_ready + ready)[:count]:
            if replica.state is ReplicaState.READY:
                replica.state = ReplicaState.DRAINING
                if replica.pending is None and not replica.batcher.has_work():
                    self._retire(replica)
            else:
                replica.version += 1  # cancels its ready event
                self._retire(replica)

    def _retire(self, replica: SimReplica) -> None:
        sleeping = sum(r.state is ReplicaState.SLEEPING for r in self.replicas)
        if sleeping < self.config.warm_tier:
            replica.state = ReplicaState.SLEEPING
            return
        replica.state = ReplicaState.STOPPED
        self.replicas.remove(replica)

    def _begin(self, replica: SimReplica, state: ReplicaState, delay_s: float) -> None:
        replica.state = state
        replica.version += 1
        self._push(self.now_s + delay_s, _READY, (replica, replica.version))

    def _new_replica(self) -> SimReplica:
        self.replicas_created += 1
        replica = SimReplica(
            f"replica-{self.replicas_created}",
            self.profile,
            prefix_block_tokens=self.config.prefix_block_tokens,
        )
        self.replicas.append(replica)
        return replica

    def _cold_start_s(self) -> float:
        return self.cold_start_s * (1.0 + self.rng.uniform(-0.1, 0.1))
