"""The omniscient optimum: the cheapest schedule with the whole availability trace known.

Exact dynamic programming over the trace's ticks under the same rules as ``replay``. All
times are whole multiples of a quantum ``q`` (the gcd of the tick, the overhead, the work and
the deadline, in seconds), so the work done is an integer number of quanta and the state at a
tick boundary is finite: what the job holds (nothing, spot or on-demand), the overhead it still
owes there, and the work done. For each state the DP keeps the least cost to reach it; many
start times are solved at once, one row each. Work outside ``[t - slack, t]`` is unreachable
or too late to finish, so each tick only touches a window as wide as the slack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kapell.api.errors import KapellError
from kapell.policy.spot.decide import Capacity
from kapell.policy.spot.replay import SpotJob

Costs = npt.NDArray[np.float64]


@dataclass
class _Layer:
    """Least cost per (start, work done) for work in ``[lo, lo + width)`` quanta."""

    lo: int
    costs: Costs


def _quantum(*seconds: float) -> int:
    whole = [round(s) for s in seconds]
    if any(abs(s - w) > 1e-9 for s, w in zip(seconds, whole, strict=True)):
        raise KapellError(
            "spot optimum: work, deadline, restart overhead and tick must be whole seconds"
        )
    return math.gcd(*whole)


def optimal_costs(job: SpotJob, spot_up: npt.NDArray[np.bool_], tick_s: float) -> Costs:
    """Least cost per row of ``spot_up`` (starts x ticks); ``inf`` where no schedule meets it."""
    q = _quantum(tick_s, job.restart_overhead_s, job.work_s, job.deadline_s)
    tick, d, work, deadline = (
        round(tick_s) // q, round(job.restart_overhead_s) // q, round(job.work_s) // q,
        round(job.deadline_s) // q,
    )  # fmt: skip
    starts = spot_up.shape[0]
    price = {c: job.price_per_s(c) * q for c in (Capacity.SPOT, Capacity.ON_DEMAND)}
    owed = sorted({max(d - j * tick, 0) for j in range(1, d // max(tick, 1) + 2)})
    held = [(c, o) for c in price for o in owed]
    best = np.full(starts, np.inf)
    layers: dict[tuple[Capacity, int], _Layer] = {}
    idle = _Layer(0, np.zeros((starts, 1)))
    elapsed = 0
    for k in range(spot_up.shape[1]):
        length = min(tick, deadline - elapsed)
        if length <= 0:
            break
        after = elapsed + length
        lo, hi = max(0, work - (deadline - after)), min(work - 1, after)
        fresh = {key: _Layer(lo, np.full((starts, max(hi - lo + 1, 0)), np.inf)) for key in held}
        fresh_idle = _Layer(lo, np.full((starts, max(hi - lo + 1, 0)), np.inf))
        up = spot_up[:, k]
        for source in [idle, *layers.values()]:
            _relax(fresh_idle, source, 0, 0.0)
        for capacity, unit in price.items():
            others = [idle, *(v for (c, _), v in layers.items() if c != capacity)]
            mask = up if capacity == Capacity.SPOT else None
            for source in others:
                _advance(fresh, best, source, capacity, d, length, unit, work, mask)
            for (c, o), source in layers.items():
                if c == capacity:
                    _advance(fresh, best, source, capacity, o, length, unit, work, mask)
        idle, layers, elapsed = fresh_idle, fresh, after
    return best


def _advance(
    fresh: dict[tuple[Capacity, int], _Layer],
    best: Costs,
    source: _Layer,
    capacity: Capacity,
    owed: int,
    length: int,
    unit: float,
    work: int,
    mask: npt.NDArray[np.bool_] | None,
) -> None:
    """Run ``length`` quanta on ``capacity`` owing ``owed`` overhead: next layer or finished."""
    paid = min(owed, length)
    gain = length - paid
    costs = source.costs if mask is None else np.where(mask[:, None], source.costs, np.inf)
    if gain > 0:
        done_from = max(work - gain, source.lo)
        if done_from < source.lo + costs.shape[1]:
            w = np.arange(done_from, source.lo + costs.shape[1])
            finish = costs[:, done_from - source.lo :] + (paid + (work - w)) * unit
            np.minimum(best, finish.min(axis=1), out=best)
    target = fresh.get((capacity, owed - paid))
    if target is not None:  # None only after a cut-short last tick, whose states lead nowhere
        _relax(target, _Layer(source.lo, costs), gain, length * unit)


def _relax(target: _Layer, source: _Layer, gain: int, add: float) -> None:
    """``target[w + gain] = min(target[w + gain], source[w] + add)`` where both exist."""
    width_t, width_s = target.costs.shape[1], source.costs.shape[1]
    first = max(target.lo, source.lo + gain)
    last = min(target.lo + width_t, source.lo + width_s + gain)
    if first >= last:
        return
    dst = target.costs[:, first - target.lo : last - target.lo]
    src = source.costs[:, first - gain - source.lo : last - gain - source.lo]
    np.minimum(dst, src + add, out=dst)
