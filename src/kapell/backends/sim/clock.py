"""A virtual clock for asyncio: the event loop jumps to its next timer instead of waiting.

The serving twin runs kapell's production asyncio code (the gateway's activator, the
reconcile loop) unchanged, on simulated time: ``loop.time()`` is virtual, and where the loop
would block in its selector until the next timer, the clock moves to that timer at once. An
hour of trace replays as fast as the callbacks run. Sockets are not simulated: the loop still
polls its selector (without waiting), so only code that never does I/O belongs on it.

Time is kept in whole microseconds and every timer is put on that grid, at least a tick
ahead when it is in the future. asyncio runs timers up to its clock resolution early; on a
wall clock time moves on meanwhile, on a float virtual clock it would not, and code that
waits "until t" would see ``time() < t`` and wait again, forever, at the same instant.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable
from contextvars import Context
from typing import TypeVarTuple, Unpack

_Ts = TypeVarTuple("_Ts")

TICKS_PER_S = 1_000_000


class _SkippingSelector(selectors.DefaultSelector):
    """A selector that never waits: a timeout moves the virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now_ticks = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("virtual clock: nothing is scheduled, the loop would wait forever")
        if timeout > 0:
            self.now_ticks += max(1, round(timeout * TICKS_PER_S))
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` starts at 0 and advances only by skipping to timers."""

    def __init__(self) -> None:
        self._virtual = _SkippingSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now_ticks / TICKS_PER_S

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        now_ticks = self._virtual.now_ticks
        ticks = math.ceil(when * TICKS_PER_S)
        if when > now_ticks / TICKS_PER_S:
            ticks = max(ticks, now_ticks + 1)
        return super().call_at(ticks / TICKS_PER_S, callback, *args, context=context)
