"""The GPU size a ``resources.gpu: auto`` Model's replicas run at: ``policy.sizing`` fed live
demand.

Each Model sized ``auto`` keeps a window of its demand counters (requests, prompt and output
tokens, as the gateway meters them). Every ``EVALUATE_EVERY_S`` the window becomes a
``SteadyDemand`` at its busiest half-minute (a pick from less than ``MIN_MEASURED_S`` of demand
is a guess, re-made every ``GUESS_EVALUATE_EVERY_S`` and replaced at once), and
``policy.sizing.choose_size`` picks the size whose smallest serving fleet has the least GPU
share, among the candidates a ``SizeMeasure`` offers and by its measurement of whether a fleet
serves. ``SizeHold`` keeps the running size until another pick has held for ``resize_hold_s``
(five cold starts, at least five minutes; a larger size ``grow_hold_s``, one cold start, at
least a minute). The controller applies the choice by writing it into the replicas'
``resources.gpu``, so a resize is the rolling update any spec change gets. The measurement is
injected: ``kapell up`` gives the latency model's (``backends.sim.sizing``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kapell.api.model import WHOLE_GPU, GPURequest, Model
from kapell.policy.autoscale import DemandSample
from kapell.policy.sizing import (
    SizeChoice,
    SizeHold,
    SizeOption,
    SteadyDemand,
    choose_size,
    grow_hold_s,
    resize_hold_s,
)

EVALUATE_EVERY_S = 30.0
"""How often the demand is re-sized (each evaluation replays it in the latency model)."""
DEMAND_WINDOW_S = 300.0
"""The demand a pick is made for: the last five minutes, as long as the autoscaler's burst
memory (with two, a seven-minute lull, two of window and five of hold, shrank a fleet to slices
just before the next burst: bursty seed 2 needed 1.92 GPU-hours at 99% against 1.88)."""
PEAK_SPAN_S = 30.0
"""The rate sized for is the window's busiest span this long: slices sized for a two-minute mean
miss the bursts within it (gated traffic at 5x, one minute on and two off: 68% of requests met
the SLO on the slices its mean picked)."""
MIN_MEASURED_S = 60.0
"""Demand is measured once the window spans this long; picks from less are guesses, which the
next pick replaces at once (a mean over the first 30 s once picked slices for a GPU's load)."""
GUESS_EVALUATE_EVERY_S = 10.0
"""How often a guess is re-made: a fleet born on a guess under load grows at its size until the
next pick (on Mooncake's long prompts, 32 slices in the first minute)."""
UNSEEN_PROMPT_TOKENS = 512
UNSEEN_OUTPUT_TOKENS = 128
"""The request assumed before any was seen (it sets which sizes meet the TTFT target)."""


class SizeMeasure(Protocol):
    """What the sizing policy needs to know about a Model's possible replica sizes."""

    def candidates(self, model: Model, prompt_tokens: int) -> Sequence[SizeOption]:
        """Sizes that can meet the Model's SLO for such prompts, smallest share first, the
        whole GPU (``WHOLE_GPU``) last."""
        ...

    def serves(self, model: Model, option: SizeOption, demand: SteadyDemand, replicas: int) -> bool:
        """Whether ``replicas`` replicas of ``option`` serve ``demand`` within the SLO."""
        ...


class OfferedSizes:
    """A ``SizeMeasure`` limited to the slices a backend can place (a cluster publishes MIG
    instances of some profiles only), so the sizing policy picks among what exists. The whole
    GPU stays the fallback even where none is offered: the Model then says it is
    unschedulable, rather than the policy having nothing to pick."""

    def __init__(self, measure: SizeMeasure, offered: Callable[[], Collection[str]]) -> None:
        self._measure = measure
        self._offered = offered

    def candidates(self, model: Model, prompt_tokens: int) -> Sequence[SizeOption]:
        offered = self._offered()
        return [
            c
            for c in self._measure.candidates(model, prompt_tokens)
            if c.name == WHOLE_GPU or c.name in offered
        ]

    def serves(self, model: Model, option: SizeOption, demand: SteadyDemand, replicas: int) -> bool:
        return self._measure.serves(model, option, demand, replicas)


@dataclass
class _Sized:
    hold: SizeHold
    window: deque[tuple[float, DemandSample]] = field(default_factory=deque)
    evaluated_s: float | None = None


class PolicySizer:
    """Picks, per Model sized ``auto``, the size its replicas run at (``size_for``)."""

    def __init__(
        self,
        sample: Callable[[Model], DemandSample],
        measure: SizeMeasure,
        cold_start_s: Callable[[Model], float],
    ) -> None:
        self._sample = sample
        self._measure = measure
        self._cold_start_s = cold_start_s
        self._models: dict[str, _Sized] = {}

    def forget(self, model_key: str) -> None:
        self._models.pop(model_key, None)

    def size_for(self, model: Model, now_s: float) -> SizeChoice:
        """The size ``model``'s replicas should run at now, and why."""
        state = self._models.get(model.key)
        if state is None:
            cold_start_s = self._cold_start_s(model)
            state = _Sized(SizeHold(resize_hold_s(cold_start_s), grow_hold_s(cold_start_s)))
            self._models[model.key] = state
        window = state.window
        window.append((now_s, self._sample(model)))
        while len(window) > 2 and window[1][0] <= now_s - DEMAND_WINDOW_S:
            window.popleft()
        current = state.hold.current
        every_s = (
            GUESS_EVALUATE_EVERY_S if current is None or current.provisional else EVALUATE_EVERY_S
        )
        if state.evaluated_s is None or now_s - state.evaluated_s >= every_s:
            state.evaluated_s = now_s
            state.hold.offer(now_s, self._pick(model, *_steady(window)))
        assert state.hold.current is not None
        return state.hold.current

    def _pick(self, model: Model, seen_demand: SteadyDemand | None, seen_s: float) -> SizeChoice:
        """The size for the demand seen over ``seen_s`` (None: no request seen); a pick from
        less than ``MIN_MEASURED_S`` of demand is provisional."""
        demand = seen_demand or SteadyDemand(0.0, UNSEEN_PROMPT_TOKENS, UNSEEN_OUTPUT_TOKENS)
        candidates = self._measure.candidates(model, demand.prompt_tokens)

        def serves(option: SizeOption, replicas: int) -> bool:
            return self._measure.serves(model, option, demand, replicas)

        chosen, share = choose_size(
            candidates,
            demand.tokens_per_s,
            serves,
            max_replicas=model.spec.scaling.max_replicas,
        )
        provisional = seen_demand is None or seen_s < MIN_MEASURED_S
        if seen_demand is None:
            seen = f"no demand seen in the last {DEMAND_WINDOW_S:.0f} s"
        else:
            seen = (
                f"{demand.tokens_per_s:,.0f} tokens/s ({demand.requests_per_s:.2f} requests/s, "
                f"{demand.prompt_tokens}-token prompts, {demand.output_tokens}-token outputs)"
            )
        if chosen.name == WHOLE_GPU:
            reason = f"whole GPUs: no slice serves {seen} below one GPU"
        else:
            replicas = round(share / chosen.gpu_fraction)
            reason = (
                f"{chosen.name}: least GPU share for {seen}: {replicas} x "
                f"{chosen.gpu_fraction:.2f} = {share:.2f} GPU"
            )
        if seen_demand is not None and provisional:
            reason += f" (a guess from {seen_s:.0f} s of demand)"
        return SizeChoice(chosen.name, reason, chosen.gpu_fraction, provisional)


def _steady(window: deque[tuple[float, DemandSample]]) -> tuple[SteadyDemand | None, float]:
    """The window's demand at its busiest ``PEAK_SPAN_S`` (or all of it, if shorter), and how
    many seconds it spans; None before a request has completed in it.

    The mix (mean prompt and output) is the completed requests'. The rate is the arrivals'
    (admitted tokens over the mean request) where the source counts them: completions lag
    arrivals, and behind a backlog they count the fleet's throughput, not the demand.
    """
    (first_s, first), (last_s, last) = window[0], window[-1]
    span_s = last_s - first_s
    requests = last.requests_total - first.requests_total
    if requests <= 0 or span_s <= 0:
        return None, span_s
    prompt = (last.prompt_tokens_total - first.prompt_tokens_total) / requests
    output = (last.tokens_total - first.tokens_total) / requests - prompt
    peak_s = min(PEAK_SPAN_S, span_s)
    if first.admitted_tokens_total is not None and last.admitted_tokens_total is not None:
        admitted = _peak_rate(window, lambda s: s.admitted_tokens_total or 0.0, peak_s)
        rate = admitted / max(prompt + output, 1.0)
    else:
        rate = _peak_rate(window, lambda s: s.requests_total, peak_s)
    return SteadyDemand(rate, max(1, round(prompt)), max(1, round(output))), span_s


def _peak_rate(
    window: deque[tuple[float, DemandSample]],
    count: Callable[[DemandSample], float],
    span_s: float,
) -> float:
    """The highest rate of a counter over the window's spans of ``span_s`` or more, each from
    the latest sample that long before its end."""
    points = list(window)
    best, start = 0.0, 0
    for end_s, end in points:
        while start + 1 < len(points) and end_s - points[start + 1][0] >= span_s:
            start += 1
        start_s, begin = points[start]
        if end_s - start_s >= span_s:
            best = max(best, (count(end) - count(begin)) / (end_s - start_s))
    return best


def sized(model: Model, size: str) -> Model:
    """``model`` with its replicas' GPU request made concrete: ``size`` is ``gpu`` (one whole
    GPU) or a MIG profile. An ``auto`` Model's ``targetTokensPerSecond`` is per whole GPU (its
    author does not know the size), so a slice's replicas aim for their share of it."""
    gpu = model.spec.resources.gpu or GPURequest()
    concrete = (
        gpu.model_copy(update={"auto": False, "count": 1})
        if size == WHOLE_GPU
        else gpu.model_copy(update={"auto": False, "mig_profile": size})
    )
    resources = model.spec.resources.model_copy(update={"gpu": concrete})
    scaling = model.spec.scaling
    if scaling.target_tokens_per_second is not None:
        per_replica = scaling.target_tokens_per_second * concrete.milli_gpus / 1000
        scaling = scaling.model_copy(update={"target_tokens_per_second": per_replica})
    spec = model.spec.model_copy(update={"resources": resources, "scaling": scaling})
    return model.model_copy(update={"spec": spec})
