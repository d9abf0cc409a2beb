"""The reconcile loop stops when cancelled, even when a wake-up arrives in the same moment."""

from __future__ import annotations

import asyncio

import pytest

from kapell.control.loop import ReconcileLoop


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
