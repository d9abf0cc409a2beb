"""The one place where serving's demand meets opportunistic training.

The Model controller's ``PolicyScaler`` reports each decision here (``observe_decision``, chained
to its ``on_decision``); the serving backend says how many GPUs serving replicas hold. The
TrainingJob controller asks ``lend`` before it starts or keeps an opportunistic job, and is
told (``on_squeeze``) the moment a decision leaves a borrower with GPUs serving needs, so the
hand-back starts within that reconcile, not at the job's next poll. ``policy.trough`` decides.
"""

from __future__ import annotations

from collections.abc import Callable

from kapell.api.model import Model
from kapell.policy.trough import Fleet, Lend, lend

DEFAULT_RESERVE_GPUS = 1


def replica_gpus(model: Model) -> int:
    """GPUs one serving replica takes from the pool (a replica without a GPU count: one)."""
    gpu = model.spec.resources.gpu
    return max(1, gpu.count) if gpu is not None else 1


class TroughArbiter:
    """Lends the GPUs of a serving pool that serving does not need to opportunistic jobs."""

    def __init__(
        self,
        pool_gpus: int,
        serving_held: Callable[[], int],
        reserve_gpus: int = DEFAULT_RESERVE_GPUS,
        on_squeeze: Callable[[str], None] | None = None,
    ) -> None:
        """``serving_held()``: GPUs serving replicas hold now; ``on_squeeze(job_key)``: a
        borrower must hand back (enqueue it)."""
        self.pool_gpus = pool_gpus
        self._serving_held = serving_held
        self._reserve = reserve_gpus
        self._on_squeeze = on_squeeze
        self._desired: dict[str, int] = {}
        self._held: dict[str, int] = {}

    def observe_decision(self, model: Model, replicas: int) -> None:
        """The autoscaler's latest decision for ``model``; squeezes borrowers it crowds out."""
        self._desired[model.key] = replicas * replica_gpus(model)
        if self._on_squeeze is None:
            return
        for job_key, gpus in list(self._held.items()):
            if lend(self._fleet(job_key), gpus, gpus) is Lend.HAND_BACK:
                self._on_squeeze(job_key)

    def lend(self, job_key: str, needed: int) -> Lend:
        """What the opportunistic job ``job_key``, needing ``needed`` GPUs, does now."""
        return lend(self._fleet(job_key), needed, self._held.get(job_key, 0))

    def hold(self, job_key: str, gpus: int) -> None:
        """Record that the job holds ``gpus`` (0: released)."""
        if gpus:
            self._held[job_key] = gpus
        else:
            self._held.pop(job_key, None)

    def held_by(self, job_key: str) -> int:
        return self._held.get(job_key, 0)

    def _fleet(self, job_key: str) -> Fleet:
        """The pool as ``job_key`` sees it: other borrowers' GPUs are not lendable to it."""
        others = sum(g for k, g in self._held.items() if k != job_key)
        return Fleet(
            self.pool_gpus - others,
            self._serving_held(),
            sum(self._desired.values()),
            self._reserve,
        )
