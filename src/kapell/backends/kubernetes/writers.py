"""A fixed set of threads that carry out API writes in the order they were queued.

Not ``ThreadPoolExecutor``: it makes a Future per task (with its Condition and lock, about
1.2 KiB by tracemalloc), and nothing here waits on a write's result; when a controller decides
10,000 replicas at once, the backlog alone would hold 12 MiB of Futures. A failed write is
logged (an executor's Future would keep the exception where nobody looks).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Task = tuple[Callable[..., object], tuple[Any, ...]]


class WriterPool:
    """``threads`` daemon threads taking tasks from one queue; ``close`` drops the backlog."""

    def __init__(self, threads: int, name: str) -> None:
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        if not self._closed.is_set():
            self._tasks.put((fn, args))

    def close(self) -> None:
        """Drop queued tasks (a stopping operator's successor redoes what is still needed:
        reconciles are level-based); a write in hand finishes, then its thread stops."""
        self._closed.set()
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None or self._closed.is_set():
                return
            fn, args = task
            try:
                fn(*args)
            except Exception:  # a write's own errors are handled in it; this is a bug
                log.exception("%s failed", getattr(fn, "__qualname__", fn))
