"""The reconcile loop stops when cancelled, even when a wake-up arrives in the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from kapell.backends.sim.clock import VirtualClockLoop
from kapell.control.loop import ReconcileLoop

T = TypeVar("T")


async def _cancel_as_woken() -> None:
    reconciled: list[str] = []

    def reconcile(key: str) -> float:
        reconciled.append(key)
        return 2.0  # a settled controller requeues itself: the loop never runs dry

    loop = ReconcileLoop(reconcile, clock=asyncio.get_running_loop().time)
    loop.enqueue("Model/a")
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.01)  # reconciled once; now it waits for the requeue or a wake-up
    assert reconciled == ["Model/a"]
    loop.enqueue("Model/a")  # wakes it ...
    task.cancel()  # ... in the same loop iteration as the caller stops it
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1.0)
    assert task.cancelled()


def test_cancel_is_not_lost_to_a_simultaneous_wake() -> None:
    """asyncio.wait_for on Python 3.11 returns the inner result when the waited-on event fires
    as the outer task is cancelled, losing the cancellation: the twin's replay then never
    returned (its reconciles went on requeueing for millions of virtual seconds)."""
    asyncio.run(_cancel_as_woken())


def _on_virtual_clock(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``scenario`` on the twin's virtual clock: waits take no wall time, timings are exact."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


async def _run_for(loop: ReconcileLoop, seconds: float) -> None:
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_key_enqueued_many_times_is_reconciled_once() -> None:
    async def scenario() -> list[str]:
        reconciled: list[str] = []
        loop = ReconcileLoop(lambda key: reconciled.append(key), asyncio.get_running_loop().time)
        for _ in range(50):
            loop.enqueue("Model/a")
        loop.enqueue("Model/b")
        await _run_for(loop, 1.0)
        return reconciled

    assert _on_virtual_clock(scenario) == ["Model/a", "Model/b"]


def test_a_reconcile_drops_the_later_requeues_of_its_key() -> None:
    """An event now and a requeue in 5 s: the reconcile now sees the latest state, so the
    later entry must not run the key a second time."""

    async def scenario() -> list[float]:
        clock = asyncio.get_running_loop().time
        times: list[float] = []
        loop = ReconcileLoop(lambda key: times.append(clock()), clock)
        loop.enqueue("Model/a", 5.0)
        loop.enqueue("Model/a")
        await _run_for(loop, 10.0)
        return times

    assert _on_virtual_clock(scenario) == [0.0]


def test_an_earlier_enqueue_overtakes_a_later_one_and_requeues_are_kept() -> None:
    async def scenario() -> list[float]:
        clock = asyncio.get_running_loop().time
        times: list[float] = []

        def reconcile(key: str) -> float | None:
            times.append(clock())
            return 3.0 if len(times) == 1 else None  # one requeue, then settled

        loop = ReconcileLoop(reconcile, clock)
        loop.enqueue("Model/a", 100.0)
        loop.enqueue("Model/a", 2.0)
        await _run_for(loop, 200.0)
        return times

    assert _on_virtual_clock(scenario) == pytest.approx([2.0, 5.0], abs=1e-5)


def test_an_event_for_a_key_waiting_in_the_same_batch_is_absorbed_by_its_run() -> None:
    """A's reconcile changes what B depends on: B, due in the same batch and not yet run,
    runs once with that change in view, not once more after."""

    async def scenario() -> list[str]:
        reconciled: list[str] = []

        def reconcile(key: str) -> None:
            reconciled.append(key)
            if key == "Model/a":
                loop.enqueue("Model/b")

        loop = ReconcileLoop(reconcile, asyncio.get_running_loop().time)
        loop.enqueue("Model/a")
        loop.enqueue("Model/b")
        await _run_for(loop, 1.0)
        return reconciled

    assert _on_virtual_clock(scenario) == ["Model/a", "Model/b"]
