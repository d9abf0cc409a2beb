"""The serving twin's replica backend: simulated replicas on the virtual clock.

``SimReplicas`` is a ``ReplicaBackend`` (what ``ModelController`` drives) whose replicas are
continuous batchers with the latency model (``kapell.engines.sim``, the one the ``sim``
engine serves with), timed by the asyncio loop it is given: on a ``VirtualClockLoop``
(``clock.py``) an hour of trace replays in seconds. It decides nothing: the production
controller, autoscaler, activator and balancer run on top of it (``kapell.bench.twin_replay``
wires them), and it only does what a backend does.

Starting a replica wakes a sleeping one of the same revision (the warm tier) in ``wake_s`` if
there is one, else cold starts a new one in ``cold_start_s`` (jittered by up to 10% from the
seed). Stopping a ready replica drains it (it takes no new request, finishes the ones it
holds), then it sleeps if the warm tier has room, else it is gone; stopping one that is not
ready yet cancels it. GPU-seconds are integrated over every replica that holds a GPU (or
slice, billed at its share), sleeping ones apart.

Each replica runs at the size its Model's ``resources.gpu`` names when it starts (a MIG slice
of the profile's GPU, else the whole GPU), so a Model the sizing policy resizes rolls onto
replicas of the new size as it would on a cluster.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from kapell.api.model import Model
from kapell.api.replica import Endpoint, Replica, ReplicaPhase
from kapell.backends.sim.gpus import SimGpuPool
from kapell.backends.sim.replica import PendingStep, ReplicaState, SimReplica
from kapell.backends.sim.slices import ReplicaSize, replica_size, size_name
from kapell.engines.sim.batcher import SimSequence
from kapell.engines.sim.latency import LatencyProfile

_PHASES = {
    ReplicaState.STARTING: ReplicaPhase.STARTING,
    ReplicaState.WAKING: ReplicaPhase.STARTING,
    ReplicaState.READY: ReplicaPhase.READY,
    ReplicaState.DRAINING: ReplicaPhase.STOPPING,
}
"""What the controller sees of each state; sleeping replicas are the backend's, not listed."""


@dataclass(frozen=True)
class SimSettings:
    """What the simulated replicas are: their latency model, starts and billing."""

    profile: LatencyProfile
    """The whole GPU's; a replica on a MIG slice runs the slice's share of it."""
    prefix_block_tokens: int = 512
    cold_start_s: float | None = None
    """None: the profile's cold start."""
    wake_s: float | None = None
    """None: the profile's wake time."""
    warm_tier: int = 0
    """Replicas kept asleep after a stop, to wake in ``wake_s`` instead of a cold start."""
    seed: int = 0


@dataclass
class _Held:
    """One replica and whose it is."""

    replica: SimReplica
    model_key: str
    model_name: str
    revision: str
    gpu_fraction: float
    """The share of a GPU it is billed (a MIG slice: g/7)."""
    has_gpu: bool = False
    """Whether it took a GPU of the shared pool (with one, a start may wait for its GPU)."""


class SimReplicas:
    """A ``ReplicaBackend`` of simulated replicas, plus the data path the twin sends through.

    ``on_change(model_key)`` is called whenever a replica of the model changes phase (as the
    local supervisor does); ``on_first_token(seq)`` when a sequence emits its first token.
    """

    def __init__(
        self,
        settings: SimSettings,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[str], None],
        on_first_token: Callable[[SimSequence], None],
        gpus: SimGpuPool | None = None,
    ) -> None:
        """``gpus``: a pool shared with training runs; a start waits for a free GPU of it."""
        self.settings = settings
        self._gpus = gpus
        profile = settings.profile
        self._cold_start_s = (
            settings.cold_start_s if settings.cold_start_s is not None else profile.cold_start_s
        )
        self._wake_s = settings.wake_s if settings.wake_s is not None else profile.wake_s
        self._loop = loop
        self._on_change = on_change
        self._on_first_token = on_first_token
        self._rng = random.Random(settings.seed)
        self._held: dict[str, _Held] = {}
        self._sizes: dict[str, ReplicaSize] = {}
        self._finished: dict[SimSequence, asyncio.Future[None]] = {}
        self._created = 0
        self._last_account_s = 0.0
        self._gpu_seconds = 0.0
        self.sleeping_gpu_seconds = 0.0
        self.cold_starts = 0
        self.wakes = 0

    # -- ReplicaBackend ---------------------------------------------------------------------

    def replicas(self, model_key: str) -> list[Replica]:
        return [
            Replica(
                id=replica_id,
                model_key=held.model_key,
                revision=held.revision,
                phase=_PHASES[held.replica.state],
                url=f"sim://{replica_id}",
            )
            for replica_id, held in self._held.items()
            if held.model_key == model_key and held.replica.state in _PHASES
        ]

    def start_replica(self, model: Model, revision: str) -> Replica:
        asleep = next(
            (
                h
                for h in self._held.values()
                if h.model_key == model.key
                and h.revision == revision
                and h.replica.state is ReplicaState.SLEEPING
            ),
            None,
        )
        if asleep is not None:
            self.wakes += 1
            self._begin(asleep, ReplicaState.WAKING, self._wake_s)
            held = asleep
        else:
            self.cold_starts += 1
            held = self._new(model, revision)
            jitter = 1.0 + self._rng.uniform(-0.1, 0.1)
            self._begin(held, ReplicaState.STARTING, self._cold_start_s * jitter)
        return Replica(held.replica.replica_id, model.key, revision, ReplicaPhase.STARTING)

    def stop_replica(self, replica_id: str) -> None:
        held = self._held.get(replica_id)
        if held is None:
            return
        replica = held.replica
        if replica.state is ReplicaState.READY:
            self._set_state(held, ReplicaState.DRAINING)
            if replica.pending is None and not replica.batcher.has_work():
                self._retire(held)
        elif replica.state in (ReplicaState.STARTING, ReplicaState.WAKING):
            replica.version += 1  # its ready timer finds a stale version and does nothing
            self._retire(held)

    def cold_start_s(self, model_key: str) -> float:
        """The mean cold start (what a backend measures, without the per-start jitter)."""
        del model_key
        return self._cold_start_s

    # -- setup and observation ---------------------------------------------------------------

    def preload(self, model: Model, revision: str, count: int) -> None:
        """Start ``count`` replicas already ready (a fleet that exists when the replay begins)."""
        for _ in range(count):
            held = self._new(model, revision)
            if self._gpus is not None:
                self._gpus.acquire(1, lambda: None)
                held.has_gpu = True
            self._set_state(held, ReplicaState.READY)

    def ready_endpoints(self, model_key: str) -> list[Endpoint]:
        return [
            Endpoint(model=h.model_name, replica_id=replica_id, base_url=f"sim://{replica_id}")
            for replica_id, h in self._held.items()
            if h.model_key == model_key and h.replica.state is ReplicaState.READY
        ]

    def engine_waiting(self, model_key: str) -> int:
        """Requests queued inside the model's replicas (an engine's ``num_requests_waiting``)."""
        return sum(
            h.replica.batcher.num_waiting
            for h in self._held.values()
            if h.model_key == model_key and h.replica.state in _PHASES
        )

    def holding(self, model_key: str) -> int:
        """Replicas of the model holding a GPU (or slice) now."""
        return sum(
            h.model_key == model_key and h.replica.state.holds_gpu for h in self._held.values()
        )

    def gpu_seconds(self) -> float:
        """GPU-seconds billed so far (slices by their share), up to the loop's time."""
        self._account()
        return self._gpu_seconds

    # -- the data path --------------------------------------------------------------------------

    def submit(self, replica_id: str, seq: SimSequence) -> asyncio.Future[None]:
        """Run ``seq`` on a ready replica; the future is done when its last token is."""
        replica = self._held[replica_id].replica
        if replica.state is not ReplicaState.READY:
            raise RuntimeError(f"replica {replica_id} is {replica.state.value}, not ready")
        done: asyncio.Future[None] = self._loop.create_future()
        self._finished[seq] = done
        replica.batcher.submit(seq)
        if replica.pending is None:
            self._start_step(self._held[replica_id])
        else:
            cut = replica.cut_run(self._loop.time())
            if cut is not None:
                self._schedule(self._held[replica_id], cut)
        return done

    def _start_step(self, held: _Held) -> None:
        pending = held.replica.next_step(self._loop.time())
        if pending is not None:
            self._schedule(held, pending)
        elif held.replica.state is ReplicaState.DRAINING:
            self._retire(held)

    def _schedule(self, held: _Held, pending: PendingStep) -> None:
        self._loop.call_at(pending.end_s, self._step_done, held, pending.version)

    def _step_done(self, held: _Held, version: int) -> None:
        replica = held.replica
        if replica.pending is None or replica.pending.version != version:
            return  # rescheduled (a decode run cut short by an arrival)
        result = replica.finish_step()
        for seq in result.first_token:
            self._on_first_token(seq)
        for seq in result.finished:
            self._finished.pop(seq).set_result(None)
        self._start_step(held)

    # -- lifecycle ------------------------------------------------------------------------------

    def _new(self, model: Model, revision: str) -> _Held:
        self._created += 1
        replica_id = f"{model.metadata.name}-{revision[:5]}-{self._created}"
        size = self._size(model)
        replica = SimReplica(
            replica_id, size.profile, prefix_block_tokens=self.settings.prefix_block_tokens
        )
        held = _Held(replica, model.key, model.metadata.name, revision, size.gpu_fraction)
        self._held[replica_id] = held
        return held

    def _size(self, model: Model) -> ReplicaSize:
        """The size ``model``'s replicas run at (slice profiles derived once per size)."""
        name = size_name(model)
        if name not in self._sizes:
            self._sizes[name] = replica_size(self.settings.profile, name)
        return self._sizes[name]

    def _begin(self, held: _Held, state: ReplicaState, delay_s: float) -> None:
        self._set_state(held, state)
        held.replica.version += 1
        version = held.replica.version
        if self._gpus is None:
            self._loop.call_at(self._loop.time() + delay_s, self._ready, held, version)
        else:  # the start's clock runs once the pool gives it a GPU
            self._gpus.acquire(1, lambda: self._got_gpu(held, version, delay_s))

    def _got_gpu(self, held: _Held, version: int, delay_s: float) -> None:
        assert self._gpus is not None
        if held.replica.version != version or not held.replica.state.holds_gpu:
            self._gpus.release(1)  # stopped while it waited
            return
        self._account()
        held.has_gpu = True
        self._loop.call_at(self._loop.time() + delay_s, self._ready, held, version)

    def _ready(self, held: _Held, version: int) -> None:
        if held.replica.version == version and held.replica.state in (
            ReplicaState.STARTING,
            ReplicaState.WAKING,
        ):
            self._set_state(held, ReplicaState.READY)

    def _retire(self, held: _Held) -> None:
        sleeping = sum(h.replica.state is ReplicaState.SLEEPING for h in self._held.values())
        if sleeping < self.settings.warm_tier:
            self._set_state(held, ReplicaState.SLEEPING)
            return
        self._set_state(held, ReplicaState.STOPPED)
        del self._held[held.replica.replica_id]

    def _set_state(self, held: _Held, state: ReplicaState) -> None:
        self._account()
        held.replica.state = state
        if held.has_gpu and not state.holds_gpu:
            assert self._gpus is not None
            held.has_gpu = False
            self._gpus.release(1)
        self._on_change(held.model_key)

    def _account(self) -> None:
        """Integrate GPU-seconds up to now (called before any replica changes state)."""
        now_s = self._loop.time()
        dt = now_s - self._last_account_s
        if dt <= 0:
            return
        holding = sleeping = 0.0
        for held in self._held.values():
            state = held.replica.state
            if state.holds_gpu and (held.has_gpu or self._gpus is None):
                holding += held.gpu_fraction
            sleeping += held.gpu_fraction * (state is ReplicaState.SLEEPING)
        self._gpu_seconds += holding * dt
        self.sleeping_gpu_seconds += sleeping * dt
        self._last_account_s = now_s
