"""Which replica size serves a demand for the least GPU share: a pure decision.

Candidates are sizes already known to meet the latency targets for the prompts seen (whole GPU
last); each is priced as the GPU share of its smallest static fleet that serves the observed
demand at the goal. Whether a fleet serves it is a measurement the caller injects (the serving
twin replays the demand), so this module holds the search and the choice, not a capacity
formula: batching, KV limits and burstiness count as the measurement sees them.

Fleets of a size are tried from the fewest replicas that could carry the mean token rate at
the size's peak throughput (an upper bound on what a replica processes, so no fleet that could
qualify is skipped) upward, while their share stays below the best share found so far (a
cheaper size is already known) and within ``max_replicas``. The size with the least share wins,
ties to the earlier (smaller) candidate; if no slice beats one whole GPU's share, the whole GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SizeOption:
    """A replica size: its name, the share of a GPU it is billed, its peak token rate."""

    name: str
    gpu_fraction: float
    peak_tokens_per_s: float


@dataclass(frozen=True)
class SteadyDemand:
    """A model's demand over a window, as the gateway meters it: the rate of requests and
    their mean prompt and output lengths."""

    requests_per_s: float
    prompt_tokens: int
    output_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.requests_per_s * (self.prompt_tokens + self.output_tokens)


Serves = Callable[[SizeOption, int], bool]
"""Whether a static fleet of that many replicas of that size serves the demand at the goal."""


def fleet_share(
    option: SizeOption,
    mean_tokens_per_s: float,
    serves: Serves,
    *,
    below_share: float,
    max_replicas: int,
) -> float:
    """GPU share of the smallest fleet of ``option`` that ``serves`` the demand, if below
    ``below_share``; ``inf`` if none is.

    Worked example: 9,000 tokens/s at a 4,000 tokens/s peak starts at ceil(2.25) = 3 replicas;
    of a 3/7-GPU slice that is 1.29 GPUs, not below 1.0, so with a whole GPU as the bound the
    slice is not tried at all and the answer is inf.
    """
    replicas = max(1, math.ceil(mean_tokens_per_s / option.peak_tokens_per_s))
    while replicas * option.gpu_fraction < below_share and replicas <= max_replicas:
        if serves(option, replicas):
            return replicas * option.gpu_fraction
        replicas += 1
    return math.inf


def choose_size(
    candidates: Sequence[SizeOption],
    mean_tokens_per_s: float,
    serves: Serves,
    *,
    max_replicas: int,
) -> tuple[SizeOption, float]:
    """The candidate whose smallest serving fleet has the least GPU share, and that share (the
    last candidate, the whole GPU, is the default at share 1.0: slices are for demand that does
    not fill one)."""
    if not candidates:
        raise ValueError("no replica size to choose from")
    best, best_share = candidates[-1], 1.0
    for option in candidates[:-1]:
        share = fleet_share(
            option, mean_tokens_per_s, serves, below_share=best_share, max_replicas=max_replicas
        )
        if share < best_share:
            best, best_share = option, share
    return best, best_share


# --- live re-sizing ----------------------------------------------------------------------------

RESIZE_HOLD_COLD_STARTS = 5.0
"""A smaller size applies once it has been the pick for this many cold starts (at least
``MIN_RESIZE_HOLD_S``): a resize is a rolling update, one cold start per replica, so a pick that
flips back sooner costs more GPU time than it saves (the same ski-rental bound as the
autoscaler's scale-down delay)."""
MIN_RESIZE_HOLD_S = 300.0
GROW_HOLD_COLD_STARTS = 1.0
"""A larger size applies once it has been the pick for one cold start (at least
``MIN_GROW_HOLD_S``): replicas too small for the demand cost more than GPU time (more of them,
each slower, while the burst that outgrew them lasts); on a bursty trace whose trickles
resized the fleet to slices, waiting five minutes to grow back cost 1.44x a static fleet."""
MIN_GROW_HOLD_S = 60.0


def resize_hold_s(cold_start_s: float) -> float:
    """How long a smaller pick must hold before replicas are resized: 5 cold starts, >= 5 min."""
    return max(MIN_RESIZE_HOLD_S, RESIZE_HOLD_COLD_STARTS * cold_start_s)


def grow_hold_s(cold_start_s: float) -> float:
    """How long a larger pick must hold before replicas are resized: a cold start, >= 1 min."""
    return max(MIN_GROW_HOLD_S, GROW_HOLD_COLD_STARTS * cold_start_s)


@dataclass(frozen=True)
class SizeChoice:
    """The size a model's replicas run at, and why."""

    size: str
    reason: str
    gpu_fraction: float = 1.0
    """The share of a GPU one replica of this size takes (which way a resize goes)."""
    provisional: bool = False
    """A guess (picked before demand was measured): the next pick replaces it at once instead
    of holding against it."""


class SizeHold:
    """Hysteresis over picks: the first pick applies at once, and so does any pick after a
    provisional one (a guess); after that, a different pick applies only once every
    pick of the last ``hold_s`` seconds (``grow_hold_s`` for a larger size) was that same size
    (time is an argument, so the control loop and the twin drive it alike)."""

    def __init__(self, hold_s: float, grow_hold_s: float | None = None) -> None:
        self.hold_s = hold_s
        self.grow_hold_s = hold_s if grow_hold_s is None else grow_hold_s
        self.current: SizeChoice | None = None
        self._pending: tuple[float, SizeChoice] | None = None

    def offer(self, now_s: float, pick: SizeChoice) -> SizeChoice:
        """Record ``pick`` (the size chosen for the demand now) and return the size to run."""
        current = self.current
        if current is None or current.provisional:
            self.current, self._pending = pick, None
            return pick
        if pick.size == current.size:  # a guess of the running size does not make it a guess
            self.current = replace(pick, provisional=False)
            self._pending = None
            return self.current
        if self._pending is None or self._pending[1].size != pick.size:
            self._pending = (now_s, pick)
        since_s = self._pending[0]
        hold_s = self.grow_hold_s if pick.gpu_fraction > current.gpu_fraction else self.hold_s
        if now_s - since_s >= hold_s:
            held_s = now_s - since_s
            self.current = replace(pick, reason=f"{pick.reason} (held {held_s:.0f}s)")
            self._pending = None
            return self.current
        left_s = hold_s - (now_s - since_s)
        return replace(
            current,
            reason=f"{current.reason}; {pick.size} picked for the demand now, "
            f"resizing if it holds {left_s:.0f}s more",
        )
