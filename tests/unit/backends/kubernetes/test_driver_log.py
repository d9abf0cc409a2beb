"""A TrainingJob's progress on a cluster, from the submitter container's log of its head pod.

The apiserver is a stand-in here (``HeadPodLogs``, listing one head pod and serving its log):
the dev cluster's node agent serves no pod logs, so the pods/log path has no real kubelet to
read from in the e2e suite. What is tested is kapell's side: which pod and container it reads,
how often, and how the records fold into the run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod
from tests.clock import ManualClock

from kapell.api.jobenv import progress_line
from kapell.api.training import RunPhase, TrainingRun, progress_changes
from kapell.backends.kubernetes.driver_log import SUBMITTER, DriverLogs

JOB = "TrainingJob/team/llm"
RAYJOB = ("team", "llm-abcde-0")


class HeadPodLogs:
    """Stand-in for lightkube's ``Client``: one head pod of Ray cluster ``llm-rc``, its log."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.reads: list[tuple[str, str, str | None]] = []

    def list(self, resource: Any, namespace: str, labels: dict[str, str]) -> list[Pod]:
        assert resource is Pod
        wanted = {"ray.io/cluster": "llm-rc", "ray.io/node-type": "head"}
        if labels != wanted:
            return []
        return [Pod(metadata=ObjectMeta(name="llm-rc-head-x1", namespace=namespace))]

    def log(self, name: str, namespace: str, container: str | None = None) -> list[str]:
        self.reads.append((namespace, name, container))
        return list(self.lines)


def _settled(logs: DriverLogs, changed: threading.Event, *args: Any) -> list[dict[str, Any]]:
    """Records after the read that ``records`` scheduled has reported a change."""
    logs.records(JOB, RAYJOB, *args)
    assert changed.wait(5), "the read found nothing new"
    changed.clear()
    return logs.records(JOB, RAYJOB, *args)


def test_progress_is_read_from_the_head_pods_submitter_log_and_folds_into_the_run() -> None:
    api = HeadPodLogs()
    api.lines = [
        "2026-03-01 00:00:01 INFO -- Job submitted\n",
        f"(RayTrainWorker pid=7) {progress_line(step=10, loss=2.5)}\n",
        f"{progress_line(checkpoint=10)}\n",
        "some other output\n",
        f"{progress_line(step=20, loss=2.1)}\n",
    ]
    clock, changed = ManualClock(100.0), threading.Event()
    seen: list[str] = []

    def on_change(key: str) -> None:
        seen.append(key)
        changed.set()

    logs = DriverLogs(api, on_change, clock, every_s=10)  # type: ignore[arg-type]
    try:
        assert logs.records(JOB, RAYJOB, "", False) == []  # no Ray cluster yet: nothing read
        time.sleep(0.05)
        assert api.reads == []
        records = _settled(logs, changed, "llm-rc", False)
        assert api.reads == [("team", "llm-rc-head-x1", SUBMITTER)] and seen == [JOB]
        run = TrainingRun(JOB, "abcde", 0, RunPhase.PENDING)
        for record in records:
            run = replace(run, **progress_changes(run, record))
        assert (run.phase, run.step, run.loss) == (RunPhase.RUNNING, 20, 2.1)
        assert (run.checkpoints, run.last_checkpoint_step) == (1, 10)

        # Within the interval: the cache, no read. After it: one read, with what was added.
        api.lines.append(f"{progress_line(checkpoint=20)}\n")
        logs.records(JOB, RAYJOB, "llm-rc", False)
        time.sleep(0.05)
        assert len(api.reads) == 1
        clock.now += 10
        assert len(_settled(logs, changed, "llm-rc", False)) == 4
        assert len(api.reads) == 2

        # Finished: read once more, then never again.
        clock.now += 10
        api.lines.append(f"{progress_line(step=30)}\n")
        assert _settled(logs, changed, "llm-rc", True)[-1] == {"step": 30}
        clock.now += 100
        logs.records(JOB, RAYJOB, "llm-rc", True)
        time.sleep(0.05)
        assert len(api.reads) == 3
        logs.forget(RAYJOB)
        assert logs.records(JOB, RAYJOB, "", True) == []
    finally:
        logs.close()


def test_a_finished_runs_progress_does_not_reopen_it() -> None:
    done = TrainingRun(JOB, "abcde", 0, RunPhase.SUCCEEDED)
    changes = progress_changes(done, {"step": 99, "loss": 1.0})
    assert changes == {"step": 99, "loss": 1.0}  # no phase: KubeRay said it ended
