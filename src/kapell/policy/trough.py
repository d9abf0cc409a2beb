"""Training in inference troughs: how many GPUs the serving fleet can lend, and when to hand
them back.

Serving comes first. It needs the GPUs its replicas hold or its autoscaler has just asked for,
whichever is more; a reserve on top absorbs the start of a burst while a borrower checkpoints
and leaves. What is left of the pool may be lent to an opportunistic TrainingJob, whole (a gang
job runs with all its workers or not at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Lend(StrEnum):
    """What an opportunistic job does now."""

    START = "start"  # enough idle GPUs: take them
    KEEP = "keep"  # holding them, and serving does not need them
    HAND_BACK = "hand_back"  # serving needs them: checkpoint, then release
    WAIT = "wait"  # not enough idle GPUs to start


@dataclass(frozen=True)
class Fleet:
    """The shared pool and serving's use of it, in GPUs."""

    pool: int
    serving_held: int
    serving_desired: int
    reserve: int = 1

    @property
    def lendable(self) -> int:
        """GPUs serving neither holds nor wants, minus the reserve."""
        return max(0, self.pool - max(self.serving_held, self.serving_desired) - self.reserve)


def lend(fleet: Fleet, needed: int, holding: int) -> Lend:
    """The opportunistic job's move: it needs ``needed`` GPUs and holds ``holding`` now.

    A holder keeps its GPUs while they are still lendable (what it holds is not counted as
    serving's); it hands them back as soon as serving's need leaves fewer than ``needed``.
    """
    if holding:
        return Lend.KEEP if fleet.lendable >= needed else Lend.HAND_BACK
    return Lend.START if fleet.lendable >= needed else Lend.WAIT
