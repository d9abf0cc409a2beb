"""The GPUs the twin's serving replicas and opportunistic training runs share.

Whoever starts on the pool waits, first come first served, until enough GPUs are free: a
serving replica the autoscaler asks for while a training run still holds the GPUs starts
only once that run has released them, so a slow hand-back shows in serving's latency.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class SimGpuPool:
    """``gpus`` GPUs; ``acquire(n, then)`` calls ``then`` once ``n`` are taken."""

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self.used = 0
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()

    def acquire(self, count: int, then: Callable[[], None]) -> None:
        if count > self.gpus:
            raise ValueError(f"{count} GPUs asked of a pool of {self.gpus}")
        self._waiting.append((count, then))
        self._grant()

    def release(self, count: int) -> None:
        self.used -= count
        assert self.used >= 0, "released more GPUs than were taken"
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.gpus:
            count, then = self._waiting.popleft()
            self.used += count
            then()
