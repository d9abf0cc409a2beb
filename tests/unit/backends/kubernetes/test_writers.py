"""The operator's writer pool: tasks run in queue order, close drops the backlog, a failing
task is logged and its thread goes on."""

from __future__ import annotations

import logging
import threading

import pytest

from kapell.backends.kubernetes.writers import WriterPool


def test_one_thread_runs_the_tasks_in_the_order_they_were_queued() -> None:
    done: list[int] = []
    finished = threading.Event()
    pool = WriterPool(1, "test")
    for i in range(100):
        pool.submit(done.append, i)
    pool.submit(finished.set)
    assert finished.wait(5)
    assert done == list(range(100))
    pool.close()


def test_close_drops_what_is_still_queued() -> None:
    release, started = threading.Event(), threading.Event()
    done: list[int] = []

    def blocking() -> None:
        started.set()
        release.wait(5)

    pool = WriterPool(1, "test")
    pool.submit(blocking)
    assert started.wait(5)
    for i in range(10):
        pool.submit(done.append, i)
    pool.close()
    pool.submit(done.append, 99)  # after close: refused
    release.set()
    for thread in pool._threads:
        thread.join(5)
        assert not thread.is_alive()
    assert done == []


def test_a_failing_task_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    finished = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    pool = WriterPool(1, "test")
    with caplog.at_level(logging.ERROR):
        pool.submit(broken)
        pool.submit(finished.set)
        assert finished.wait(5)
    pool.close()
    assert "broken failed" in caplog.text and "boom" in caplog.text
