"""How many replicas a model needs: pure arithmetic plus a thin stateful wrapper.

Three policies share one interface, so the control loop and the discrete-event simulator
drive them the same way::

    scaler = build_autoscaler(model.spec.scaling.autoscaler, tuned_config(model, cold_start_s=20.0))
    scaler.observe(now_s, DemandSample(tokens_total=..., in_flight=..., ready_replicas=...))
    decision = scaler.desired(now_s)          # ScaleDecision(replicas, panicking, reason)

Time is always an argument (``now_s``, any monotonic origin); nothing here reads a clock.

- ``TokenAutoscaler`` (kapell's default, ``scaling.autoscaler: tokens``): demand is prompt +
  generated tokens per second over a sliding window, counted when requests are admitted (prompt
  plus expected output) where the source can, compared with what one replica can process
  (``scaling.targetTokensPerSecond``, or learned from observed throughput). Tokens, not
  requests or GPU utilisation, because an LLM replica's capacity is a token rate: one
  8k-token prompt costs what fifty short chats cost. It looks one cold start ahead only on a
  sustained trend (two whole stable windows), by at most ``max_forecast_growth``, and keeps a
  replica until it has been unneeded for a cold start (``scale_down_delay_s``): releasing a
  replica that is wanted back within a cold start costs more GPU time than keeping it (the
  ski-rental break-even). It also remembers bursts (``burst_memory_s``): a burst shorter than
  a cold start is over before a replica started for it is ready, so the fleet must already
  hold it; the count covers a high quantile of the recent panic-window rates, and a burst
  that recurs within the memory finds its replicas still there.
- ``ConcurrencyAutoscaler`` (``concurrency``): Knative KPA's signal, in-flight plus queued
  requests per replica against a target. A baseline.
- ``StaticAutoscaler`` (``static``): a fixed count. A baseline.

The hysteresis both dynamic policies share (``WindowedHysteresis``) follows Knative's KPA:
a 60 s stable window decides normally; a 6 s panic window reacts to bursts. Panic starts when
the panic window asks for ``panic_threshold`` times the ready replicas, lasts until a full
stable window passes without a new trigger, and never scales down while it lasts.
A scale-down takes effect only when every recommendation of the last ``scale_down_delay_s``
agrees (Kubernetes HPA's stabilisation window; Knative's ``scale-down-delay``, 0 by default).
Idle models go to zero only ``scale_to_zero_after_s`` after their last request, and only when
``min_replicas`` is 0. ``warm_pool`` replicas are kept above demand until a model scales to zero.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kapell.api import Model
from kapell.api.units import parse_duration


@dataclass(frozen=True)
class AutoscaleConfig:
    """Knobs of the dynamic policies; ``config_from_model`` fills them from a Model."""

    min_replicas: int = 0
    max_replicas: int = 1
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    scale_to_zero_after_s: float = 300.0
    warm_pool: int = 0
    cold_start_s: float = 0.0
    """Seconds from asking for a replica to it being ready; how far ahead to look."""
    capacity_tokens_per_s: float | None = None
    """Tokens/s one replica sustains; None learns it, starting at ``initial_capacity...``."""
    initial_capacity_tokens_per_s: float = 1000.0
    scale_down_delay_s: float | None = None
    """Seconds a lower count must be recommended throughout before it applies. None: the
    policy's default (tokens: ``max(stable_window_s, cold_start_s)``; concurrency: 0, as
    Knative's KPA)."""
    max_forecast_growth: float = 0.25
    """The cold-start forecast adds at most this fraction to the stable-window rate."""
    burst_memory_s: float | None = None
    """How long the token policy remembers bursts; None: ``BURST_MEMORY_COLD_STARTS`` cold
    starts (at least that many stable windows); 0 turns burst memory off."""
    burst_quantile: float = 0.9
    """The quantile of the remembered panic-window rates the token policy covers."""
    target_concurrency: float = 8.0
    """Requests per replica the concurrency (KPA) policy aims for."""
    default_tokens_per_request: float = 512.0
    """Tokens assumed per queued request before any request has been measured."""
    replica_gpu_share: float = 1.0
    """The share of a GPU each replica runs on (a MIG slice: its compute fraction); a learned
    capacity follows it when the replicas are resized."""


@dataclass(frozen=True)
class DemandSample:
    """One observation of a model. Counters are cumulative; the scaler differences them.

    ``tokens_total`` and ``requests_total`` count at completion (what replicas processed).
    ``admitted_tokens_total`` counts prompt plus expected output tokens when a request is
    admitted (what the router adds to its outstanding-token counters): demand as it arrives,
    rather than a request's duration later and bunched by completions; None when the source
    has only completion counts. ``engine_waiting`` (requests queued inside engines) tells the
    capacity learner that replicas are saturated, so their throughput is their capacity.
    """

    tokens_total: float
    requests_total: float = 0.0
    in_flight: int = 0
    queue_depth: int = 0
    ready_replicas: int = 0
    engine_waiting: int = 0
    admitted_tokens_total: float | None = None
    prompt_tokens_total: float = 0.0
    """The prompt part of ``tokens_total`` (counted at completion)."""


@dataclass(frozen=True)
class ScaleDecision:
    """The replica count to converge to, and why."""

    replicas: int
    panicking: bool = False
    reason: str = ""


class Autoscaler(Protocol):
    """The one interface of every policy here."""

    def observe(self, now_s: float, sample: DemandSample) -> None:
        """Record a sample taken at ``now_s`` (non-decreasing across calls)."""
        ...

    def desired(self, now_s: float) -> ScaleDecision:
        """The replica count wanted at ``now_s`` given everything observed so far."""
        ...

    def reconfigure(self, config: AutoscaleConfig) -> None:
        """Take new knobs (an edited ``spec.scaling``, a resize, a re-measured cold start)
        and keep what was observed: a policy built anew knows no demand, and asked for the
        minimum in the middle of a load."""
        ...


BURST_MEMORY_COLD_STARTS = 5
"""Default burst memory in cold starts: long enough to bridge the idle gaps of bursty traffic
(minutes), short enough to let a fleet shrink within minutes of a load change. A choice,
measured in docs/simulator.md, not fitted."""


# --- pure arithmetic -------------------------------------------------------------------------


def replicas_for_rate(demand_per_s: float, capacity_per_s: float) -> int:
    """Replicas needed to serve ``demand_per_s`` at ``capacity_per_s`` each (rounded up).

    Worked example: 4,500 tokens/s of demand at 1,000 tokens/s per replica needs
    ``ceil(4.5) = 5`` replicas; 4,000 tokens/s needs exactly 4.
    """
    if capacity_per_s <= 0:
        raise ValueError("capacity must be positive")
    return max(0, math.ceil(demand_per_s / capacity_per_s - 1e-9))


def forecast_rate(
    previous_rate: float,
    current_rate: float,
    *,
    window_s: float,
    horizon_s: float,
    max_growth: float,
) -> float:
    """Demand expected ``horizon_s`` from now, on the trend between two adjacent windows.

    ``previous_rate`` and ``current_rate`` are the means of the two last ``window_s`` windows,
    whose centres are ``window_s`` apart; the current one sits ``window_s / 2`` in the past.
    Only a rise is extrapolated (a falling trend is the scale-down delay's business), and by at
    most ``max_growth`` times the current rate: two whole windows average out a short spike,
    and the cap bounds what noise in their difference can add. Worked example: 1,000
    tokens/s in the previous 60 s, 1,200 in the last 60 s, 60 s cold start: slope 200 / 60 =
    3.33 tokens/s per second, forecast 1,200 + 3.33 x (60 + 30) = 1,500 tokens/s, just
    within a 25% cap (1,200 x 1.25 = 1,500); 1,000 then 2,000 would give 3,500, capped at 2,500.
    """
    if horizon_s <= 0 or window_s <= 0 or current_rate <= previous_rate:
        return current_rate
    slope = (current_rate - previous_rate) / window_s
    ahead = current_rate + slope * (horizon_s + window_s / 2.0)
    return min(ahead, current_rate * (1.0 + max_growth))


def learn_capacity(
    estimate_per_s: float, observed_per_s: float, *, saturated: bool, smoothing: float = 0.2
) -> float:
    """A replica's capacity after observing it process ``observed_per_s`` tokens/s.

    Unsaturated replicas (nothing waiting) prove only a lower bound, so the estimate rises
    to what was seen but never falls. Saturated replicas run at capacity, so the estimate
    moves toward the observation by ``smoothing`` (an EWMA). Example: estimate 1,000, a
    saturated replica doing 800 gives 1,000 + 0.2 x (800 - 1,000) = 960.
    """
    if saturated and observed_per_s > 0:
        return estimate_per_s + smoothing * (observed_per_s - estimate_per_s)
    return max(estimate_per_s, observed_per_s)


# --- windows and hysteresis ------------------------------------------------------------------


class _Window:
    """Timestamped samples of a cumulative counter, or of a gauge, kept for ``span_s``."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._points: deque[tuple[float, float]] = deque()

    def add(self, now_s: float, value: float) -> None:
        self._points.append((now_s, value))
        while len(self._points) > 2 and self._points[1][0] <= now_s - self.span_s:
            self._points.popleft()

    def rate(self, now_s: float, window_s: float, *, ago_s: float = 0.0) -> float:
        """Per-second increase of a counter over ``window_s`` ending ``ago_s`` before now.

        Measured between the newest samples at or before the window's two ends (the oldest
        sample stands in for a start older than the history); 0 with no time between them.
        """
        end_s = now_s - ago_s
        first = last = None
        for point in self._points:
            if first is None or point[0] <= end_s - window_s:
                first = point
            if point[0] <= end_s:
                last = point
        if first is None or last is None or last[0] <= first[0]:
            return 0.0
        return max(0.0, last[1] - first[1]) / (last[0] - first[0])

    def mean(self, now_s: float, window_s: float) -> float:
        """Mean of a gauge's samples taken in the last ``window_s`` (0 with none)."""
        values = [v for t, v in self._points if t >= now_s - window_s]
        return sum(values) / len(values) if values else 0.0

    def latest(self) -> float:
        return self._points[-1][1] if self._points else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (nearest rank below) of the values kept, 0 with none."""
        values = sorted(v for _, v in self._points)
        return values[int(q * (len(values) - 1))] if values else 0.0


class WindowedHysteresis:
    """Turns a stable-window and a panic-window replica count into a decision over time.

    Rules, in order: panic when the panic window asks for ``panic_threshold`` x ready
    replicas, for at least one stable window, without scaling down meanwhile; otherwise follow
    the stable window, but scale down only to the highest count recommended over the last
    ``scale_down_delay_s``; scale from zero at once when requests wait; go to zero only after
    ``scale_to_zero_after_s`` idle (and ``min_replicas == 0``); add ``warm_pool`` while active;
    clamp to ``[min_replicas, max_replicas]``.
    """

    def __init__(self, config: AutoscaleConfig, *, scale_down_delay_s: float) -> None:
        self._config = config
        self._scale_down_delay_s = scale_down_delay_s
        self._panic_until_s = -math.inf
        self._last_active_s = -math.inf
        self._last_wanted = 0
        self._recommended: deque[tuple[float, int]] = deque()

    def reconfigure(self, config: AutoscaleConfig, *, scale_down_delay_s: float) -> None:
        """New knobs. On a resize the counts it holds on to (the last decision, the
        recommendations the scale-down delay keeps) are converted to the new size, GPU share
        for GPU share: ten 3g.40gb slices held through a resize to whole GPUs would otherwise
        become ten GPUs until the delay ran out (at 5x the conversation trace, a fleet rolled
        from its first guess onto GPUs asked for 10 where 2 served)."""
        factor = self._config.replica_gpu_share / config.replica_gpu_share
        if factor != 1.0:
            self._last_wanted = _converted(self._last_wanted, factor)
            self._recommended = deque((t_s, _converted(n, factor)) for t_s, n in self._recommended)
        self._config = config
        self._scale_down_delay_s = scale_down_delay_s

    def mark_active(self, now_s: float) -> None:
        """Note that requests were seen at ``now_s`` (postpones scale to zero)."""
        self._last_active_s = now_s

    def _stabilised(self, now_s: float, recommended: int) -> int:
        """The highest count recommended in the last ``scale_down_delay_s`` (HPA-style)."""
        history = self._recommended
        while history and history[-1][1] <= recommended:
            history.pop()  # dominated: it can never be the maximum again
        history.append((now_s, recommended))
        while history[0][0] < now_s - self._scale_down_delay_s:
            history.popleft()
        return history[0][1]

    def decide(
        self, now_s: float, *, stable: int, panic: int, ready: int, waiting: int
    ) -> ScaleDecision:
        config = self._config
        if ready > 0 and panic >= config.panic_threshold * ready and panic > ready:
            self._panic_until_s = now_s + config.stable_window_s
        panicking = now_s < self._panic_until_s
        if panicking:
            recommended, reason = max(stable, panic, self._last_wanted), "panic window"
        else:
            recommended, reason = stable, "stable window"
        wanted = self._stabilised(now_s, recommended)
        if wanted > recommended:
            reason = f"scale-down delay {self._scale_down_delay_s:.0f}s"
        self._last_wanted = wanted
        if waiting > 0 and wanted == 0:
            wanted, reason = 1, "requests waiting for a replica"
        idle_s = now_s - self._last_active_s
        if wanted == 0:
            if config.min_replicas == 0 and idle_s >= config.scale_to_zero_after_s:
                reason = f"idle {idle_s:.0f}s >= scaleToZeroAfter"
            else:
                wanted, reason = 1, "idle, within scaleToZeroAfter"
        if wanted > 0:
            wanted += config.warm_pool
        replicas = min(max(wanted, config.min_replicas), config.max_replicas)
        return ScaleDecision(replicas=replicas, panicking=panicking, reason=reason)


def _converted(replicas: int, factor: float) -> int:
    """``replicas`` of one size as replicas of another whose GPU share is 1/``factor`` of it,
    rounded up (``1e-9`` absorbs the float error of shares such as 3/7)."""
    return math.ceil(replicas * factor - 1e-9)


# --- policies --------------------------------------------------------------------------------


class TokenAutoscaler:
    """kapell's policy: token demand against per-replica token capacity.

    Demand over each window is the admitted token rate (the completed one when the source has
    no admission counts) plus the backlog (queued requests times the measured tokens per
    request) drained over the panic window (a cold start when no replica is ready). The
    stable count looks ``cold_start_s`` ahead on a sustained rise (``forecast_rate``), so a
    replica starts early enough to be ready when demand crosses capacity, and covers at least
    the ``burst_quantile`` of the panic-window rates of the last ``burst_memory_s``; a lower
    count waits ``scale_down_delay_s`` (default: a cold start).
    """

    def __init__(self, config: AutoscaleConfig) -> None:
        self._config = config
        span_s = 2 * config.stable_window_s
        self._tokens = _Window(span_s)
        self._waiting = _Window(config.panic_window_s)
        self._admitted = _Window(span_s)
        self._requests = _Window(span_s)
        self._hysteresis = WindowedHysteresis(config, scale_down_delay_s=_scale_down_delay(config))
        memory_s = _burst_memory(config)
        self._bursts = _Window(memory_s) if memory_s > 0 else None
        self._sample = DemandSample(tokens_total=0.0)
        self._first_s: float | None = None
        self.capacity_tokens_per_s = (
            config.capacity_tokens_per_s or config.initial_capacity_tokens_per_s
        )

    def reconfigure(self, config: AutoscaleConfig) -> None:
        """New knobs over the same history. A set target is the capacity; a learned capacity
        carries over, scaled by the change in the replicas' GPU share (a resize)."""
        previous = self._config
        self._config = config
        self._hysteresis.reconfigure(config, scale_down_delay_s=_scale_down_delay(config))
        memory_s = _burst_memory(config)
        if memory_s <= 0:
            self._bursts = None
        elif self._bursts is None:
            self._bursts = _Window(memory_s)
        else:
            self._bursts.span_s = memory_s
        if config.capacity_tokens_per_s is not None:
            self.capacity_tokens_per_s = config.capacity_tokens_per_s
        elif previous.capacity_tokens_per_s is not None:
            self.capacity_tokens_per_s = config.initial_capacity_tokens_per_s
        else:
            self.capacity_tokens_per_s *= config.replica_gpu_share / previous.replica_gpu_share

    def observe(self, now_s: float, sample: DemandSample) -> None:
        config = self._config
        admitted = sample.admitted_tokens_total
        demand_total = admitted if admitted is not None else sample.tokens_total
        active = sample.in_flight > 0 or sample.queue_depth > 0
        active |= demand_total > self._admitted.latest()
        active |= sample.requests_total > self._requests.latest()
        if active:
            self._hysteresis.mark_active(now_s)
        if self._first_s is None:
            self._first_s = now_s
        self._tokens.add(now_s, sample.tokens_total)
        self._admitted.add(now_s, demand_total)
        self._requests.add(now_s, sample.requests_total)
        self._sample = sample
        if self._bursts is not None:
            self._bursts.add(now_s, self._admitted.rate(now_s, config.panic_window_s))
        self._waiting.add(now_s, float(sample.engine_waiting + sample.queue_depth))
        if config.capacity_tokens_per_s is None and sample.ready_replicas > 0:
            per_replica = self._tokens.rate(now_s, config.panic_window_s) / sample.ready_replicas
            self.capacity_tokens_per_s = learn_capacity(
                self.capacity_tokens_per_s, per_replica, saturated=self._saturated(now_s)
            )

    def desired(self, now_s: float) -> ScaleDecision:
        config = self._config
        window_s = config.stable_window_s
        stable_rate = self._admitted.rate(now_s, window_s)
        previous_rate = self._admitted.rate(now_s, window_s, ago_s=window_s)
        panic_rate = self._admitted.rate(now_s, config.panic_window_s)
        completed_rate = self._tokens.rate(now_s, window_s)
        request_rate = self._requests.rate(now_s, window_s)
        per_request = (
            completed_rate / request_rate if request_rate > 0 else config.default_tokens_per_request
        )
        backlog_rate = self._sample.queue_depth * per_request / self._drain_s()
        history_s = now_s - self._first_s if self._first_s is not None else 0.0
        ahead = forecast_rate(
            previous_rate,
            stable_rate,
            window_s=window_s,
            horizon_s=config.cold_start_s if history_s >= 2 * window_s else 0.0,
            max_growth=config.max_forecast_growth,
        )
        if self._bursts is not None:
            ahead = max(ahead, self._bursts.quantile(config.burst_quantile))
        capacity = self.capacity_tokens_per_s
        stable = replicas_for_rate(ahead + backlog_rate, capacity)
        panic = replicas_for_rate(panic_rate + backlog_rate, capacity)
        return self._hysteresis.decide(
            now_s,
            stable=stable,
            panic=panic,
            ready=self._sample.ready_replicas,
            waiting=self._sample.queue_depth,
        )

    def _saturated(self, now_s: float) -> bool:
        """Replicas run at capacity: over the panic window, on average at least one request
        waited per ready replica. A request that waits for the next step boundary on a lightly
        loaded replica is not saturation; treating it as such pulled the estimate down toward
        demand-limited throughput, which added replicas, which lowered it further."""
        waiting = self._waiting.mean(now_s, self._config.panic_window_s)
        return waiting >= max(1, self._sample.ready_replicas)

    def _drain_s(self) -> float:
        """Seconds to drain the activator's backlog in: the panic window while replicas are
        ready; with none ready, a cold start, because a replica asked for now is ready only
        then, and asking to drain a cold start's worth of queue in a few seconds after it would
        start ten times the replicas the steady demand needs (each ready at the same moment)."""
        config = self._config
        if self._sample.ready_replicas > 0:
            return config.panic_window_s
        return max(config.panic_window_s, config.cold_start_s)


def _scale_down_delay(config: AutoscaleConfig) -> float:
    """The token policy's scale-down delay: as set, else a cold start (a stable window at least)."""
    if config.scale_down_delay_s is not None:
        return config.scale_down_delay_s
    return max(config.stable_window_s, config.cold_start_s)


def _burst_memory(config: AutoscaleConfig) -> float:
    """Seconds of burst memory: as set, else ``BURST_MEMORY_COLD_STARTS`` cold starts."""
    if config.burst_memory_s is not None:
        return config.burst_memory_s
    return BURST_MEMORY_COLD_STARTS * max(config.cold_start_s, config.stable_window_s)


class ConcurrencyAutoscaler:
    """Knative KPA's policy: mean in-flight + queued requests over ``target_concurrency``."""

    def __init__(self, config: AutoscaleConfig) -> None:
        self._config = config
        self._concurrency = _Window(config.stable_window_s)
        self._hysteresis = WindowedHysteresis(
            config, scale_down_delay_s=config.scale_down_delay_s or 0.0
        )
        self._sample = DemandSample(tokens_total=0.0)

    def observe(self, now_s: float, sample: DemandSample) -> None:
        concurrency = sample.in_flight + sample.queue_depth
        if concurrency > 0 or sample.requests_total > self._sample.requests_total:
            self._hysteresis.mark_active(now_s)
        self._concurrency.add(now_s, float(concurrency))
        self._sample = sample

    def reconfigure(self, config: AutoscaleConfig) -> None:
        self._config = config
        self._hysteresis.reconfigure(config, scale_down_delay_s=config.scale_down_delay_s or 0.0)

    def desired(self, now_s: float) -> ScaleDecision:
        config = self._config
        stable_mean = self._concurrency.mean(now_s, config.stable_window_s)
        panic_mean = self._concurrency.mean(now_s, config.panic_window_s)
        return self._hysteresis.decide(
            now_s,
            stable=replicas_for_rate(stable_mean, config.target_concurrency),
            panic=replicas_for_rate(panic_mean, config.target_concurrency),
            ready=self._sample.ready_replicas,
            waiting=self._sample.queue_depth,
        )


class StaticAutoscaler:
    """A fixed replica count whatever the demand (provisioned for peak)."""

    def __init__(self, replicas: int) -> None:
        self._replicas = replicas

    def observe(self, now_s: float, sample: DemandSample) -> None:
        del now_s, sample

    def desired(self, now_s: float) -> ScaleDecision:
        del now_s
        return ScaleDecision(replicas=self._replicas, reason="static")

    def reconfigure(self, config: AutoscaleConfig) -> None:
        self._replicas = config.max_replicas


def config_from_model(model: Model, *, cold_start_s: float = 0.0) -> AutoscaleConfig:
    """The autoscaler knobs a Model's ``spec.scaling`` sets; windows keep their defaults."""
    scaling = model.spec.scaling
    return AutoscaleConfig(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        scale_to_zero_after_s=parse_duration(scaling.scale_to_zero_after),
        warm_pool=scaling.warm_pool,
        cold_start_s=cold_start_s,
        capacity_tokens_per_s=scaling.target_tokens_per_second,
        replica_gpu_share=_gpu_share(model),
    )


def _gpu_share(model: Model) -> float:
    """The GPUs one replica requests (a slice or share: a fraction); 1 for a CPU replica or a
    size not yet picked."""
    gpu = model.spec.resources.gpu
    if gpu is None or gpu.auto:
        return 1.0
    return gpu.milli_gpus / 1000 or 1.0


Tune = Callable[[AutoscaleConfig], AutoscaleConfig]
"""Changes to the knobs a Model sets (a benchmark's sweep; the default is none)."""


def tuned_config(
    model: Model, *, cold_start_s: float = 0.0, tune: Tune | None = None
) -> AutoscaleConfig:
    """``config_from_model``, then ``tune``d."""
    config = config_from_model(model, cold_start_s=cold_start_s)
    return tune(config) if tune is not None else config


def build_autoscaler(kind: str, config: AutoscaleConfig) -> Autoscaler:
    """The policy ``kind`` (``scaling.autoscaler``) with ``config``. The one factory of
    autoscalers: the control loop and the twin both use it."""
    factories: dict[str, Callable[[], Autoscaler]] = {
        "tokens": lambda: TokenAutoscaler(config),
        "concurrency": lambda: ConcurrencyAutoscaler(config),
        "static": lambda: StaticAutoscaler(config.max_replicas),
    }
    return factories[kind]()
