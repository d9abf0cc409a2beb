"""The measurement the sizing policy decides on, for a model the latency model describes.

``policy.sizing`` holds the search and the choice; whether a fleet of some size serves a demand
is injected. Here that is answered in the twin: a steady stream of the observed demand (Poisson
arrivals at the observed request rate, each with the observed mean prompt and output) replayed
on one simulated replica at its share of the rate, as a balanced fleet would give it, and
checked against the SLO. Batching, KV limits and prefill interference count as the sim engine
would show them; burstiness beyond Poisson and the spread of prompt lengths do not.
"""

from __future__ import annotations

import math
import random

from kapell.api.model import Model
from kapell.backends.sim.replica import ReplicaState, SimReplica
from kapell.backends.sim.slices import ReplicaSize, replica_size, slo_feasible
from kapell.engines.sim.batcher import SimSequence
from kapell.engines.sim.latency import LatencyProfile, load_profile
from kapell.policy.sizing import SizeOption, SteadyDemand

ATTAINMENT_GOAL = 0.99
IDLE_PREFILL_SHARE_OF_TTFT = 0.5
"""A candidate size must prefill the prompt on an idle replica within this share of the TTFT
target, so the prompt still meets the target behind the queueing a busy replica adds (a slice
that only just meets it idle misses it under load: on the Mooncake trace 4g.40gb met 5 s idle
and never reached 99% attainment)."""
MEASURE_S = 120.0
"""Virtual seconds of steady demand one measurement replays (more at low rates, see below)."""
MEASURE_REQUESTS = 400
"""... or as long as this many requests take, up to ``MEASURE_MAX_S``."""
MEASURE_MAX_S = 900.0
PREFIX_BLOCK_TOKENS = 512


def peak_tokens_per_s(size: ReplicaSize) -> float:
    """More tokens per second than one replica can process: a full step of prompt tokens
    (the most tokens a step holds, at the lowest cost per token, without the decode steps'
    KV reads), with 10% to spare."""
    step_tokens = size.profile.max_batched_tokens
    return 1.1 * step_tokens / size.profile.prefill_s(step_tokens)


def size_option(size: ReplicaSize) -> SizeOption:
    """What the sizing policy knows of a replica size."""
    return SizeOption(size.name, size.gpu_fraction, peak_tokens_per_s(size))


def candidate_sizes(
    profile: LatencyProfile, prompt_tokens: int, slo_ttft_s: float, slo_tpot_s: float
) -> list[ReplicaSize]:
    """Sizes that can meet the SLO for ``prompt_tokens`` prompts, smallest share first, the
    whole GPU last (``slo_feasible`` with half the TTFT target for the idle prefill)."""
    return slo_feasible(profile, prompt_tokens, slo_ttft_s * IDLE_PREFILL_SHARE_OF_TTFT, slo_tpot_s)


def steady_serves(model: Model, size: ReplicaSize, demand: SteadyDemand, replicas: int,
                  *, seed: int = 0) -> bool:  # fmt: skip
    """Whether ``replicas`` replicas of ``size`` serve ``demand`` within the Model's SLO for
    ``ATTAINMENT_GOAL`` of requests: one replica replayed at a ``1/replicas`` share.

    Driven synchronously (arrivals and step ends in time order), not on an event loop: the
    control loop asks from inside its own running loop, where another cannot run.
    """
    rate = demand.requests_per_s / max(replicas, 1)
    if rate <= 0:
        return True
    span_s = min(max(MEASURE_S, MEASURE_REQUESTS / rate), MEASURE_MAX_S)
    rng = random.Random(seed)
    arrivals, t_s = [], rng.expovariate(rate)
    while t_s < span_s:
        arrivals.append(t_s)
        t_s += rng.expovariate(rate)
    replica = SimReplica("measure", size.profile, prefix_block_tokens=PREFIX_BLOCK_TOKENS)
    replica.state = ReplicaState.READY
    first_token: dict[int, float] = {}
    finished: dict[int, float] = {}
    index = 0
    while index < len(arrivals) or replica.pending is not None:
        step_end_s = replica.pending.end_s if replica.pending is not None else math.inf
        if index < len(arrivals) and arrivals[index] <= step_end_s:
            now_s = arrivals[index]
            seq = SimSequence(demand.prompt_tokens, demand.output_tokens, (), tag=index)
            replica.batcher.submit(seq)
            index += 1
            if replica.pending is None:
                replica.next_step(now_s)
            else:
                replica.cut_run(now_s)
            continue
        result = replica.finish_step()
        for seq in result.first_token:
            first_token[seq.tag] = step_end_s
        for seq in result.finished:
            finished[seq.tag] = step_end_s
        replica.next_step(step_end_s)
    slo = model.spec.slo
    decode_tokens = max(demand.output_tokens - 1, 1)
    good = sum(
        first_token[i] - arrival_s <= slo.ttft_s
        and (finished[i] - first_token[i]) / decode_tokens <= slo.tpot_s
        for i, arrival_s in enumerate(arrivals)
    )
    return good >= ATTAINMENT_GOAL * len(arrivals)


def profile_of(model: Model) -> LatencyProfile:
    """The latency profile a ``sim`` Model serves with (its source names it)."""
    return load_profile((model.spec.source.uri or "").removeprefix("file://"))


def sized_profile(model: Model, size: str) -> ReplicaSize:
    """``size`` (``gpu`` or a MIG profile) of the Model's latency profile."""
    return replica_size(profile_of(model), size)


class LatencyModelSizes:
    """``control.sizing.SizeMeasure`` for ``sim`` Models: candidates and fleets judged in the
    latency model the sim engine serves with."""

    def candidates(self, model: Model, prompt_tokens: int) -> list[SizeOption]:
        slo = model.spec.slo
        sizes = candidate_sizes(profile_of(model), prompt_tokens, slo.ttft_s, slo.tpot_s)
        return [size_option(s) for s in sizes]

    def serves(self, model: Model, option: SizeOption, demand: SteadyDemand, replicas: int) -> bool:
        return steady_serves(model, sized_profile(model, option.name), demand, replicas)
