"""A work queue that drives ``reconcile(key) -> requeue_after_s`` calls.

Keys are deduplicated: however many events arrive for a key, it is reconciled once per wake-up,
which is what makes level-based controllers cheap. A controller that raises is retried with
exponential backoff and the error is kept for `kapell status`, never lost in a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Reconcile = Callable[[str], float | None]
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 30.0


class ReconcileLoop:
    """Runs a reconcile function for keys when they are enqueued or their requeue time comes."""

    def __init__(self, reconcile: Reconcile, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: the event loop's time (the twin's virtual clock runs this loop too)."""
        self._reconcile = reconcile
        self._clock = clock
        self._due: list[tuple[float, str]] = []  # a heap; entries not in ``_when`` are stale
        self._when: dict[str, float] = {}  # each waiting key's earliest due time
        self._wake = asyncio.Event()
        self._failures: dict[str, int] = {}
        self.errors: dict[str, str] = {}

    def enqueue(self, key: str, after_s: float = 0.0) -> None:
        due = self._clock() + after_s
        if self._when.get(key, due + 1.0) > due:  # a later entry would be dropped unrun anyway
            self._when[key] = due
            heapq.heappush(self._due, (due, key))
        self._wake.set()

    async def run(self) -> None:
        while True:
            now = self._clock()
            ready: set[str] = set()
            while self._due and self._due[0][0] <= now:
                due, key = heapq.heappop(self._due)
                if self._when.get(key) == due:
                    del self._when[key]
                    ready.add(key)
            for key in sorted(ready):
                self._run_one(key)
            self._wake.clear()
            timeout = self._due[0][0] - self._clock() if self._due else None
            if timeout is None or timeout > 0:
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the wake-up
                # when it fires as this task is cancelled, losing the cancellation, and the
                # loop (requeueing itself) then runs forever (the twin's replay never ended).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)

    def _run_one(self, key: str) -> None:
        # Drop later entries for this key (they go stale): this reconcile sees the latest
        # state anyway. Dropping by rebuilding the heap cost a pass over every waiting key per
        # reconcile, which at 10,000 pods kept the operator's loop busy for seconds at a time.
        self._when.pop(key, None)
        try:
            requeue = self._reconcile(key)
        except Exception as exc:  # a controller bug must not stop the others
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self.errors[key] = f"{type(exc).__name__}: {exc}"
            log.exception("reconcile %s failed (attempt %d)", key, failures)
            self.enqueue(key, min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S))
            return
        self._failures.pop(key, None)
        self.errors.pop(key, None)
        if requeue is not None:
            self.enqueue(key, requeue)
