"""Training in a serving trough, live: a real `kapell up --serving-gpus 3` with a sim-engine
Model and a tiny opportunistic TrainingJob on Ray.

With one replica serving, one GPU of the three is lendable (one is held back as the reserve),
so the job starts on it. Traffic through the gateway (the official openai client) makes the
autoscaler ask for a second replica: the job hands its GPU back (its Ray cluster is stopped)
and says so in its status, and serving gets its second replica. The job's entrypoint only sleeps: what is tested is the
lending and the hand-back, not training (about 1.5 min here, most of it Ray starting and
stopping).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import openai
import pytest

from tests.integration.local.conftest import Instance

pytest.importorskip("ray", reason="the TrainingJob runs on Ray (kapell[ray])")

SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: chat}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.3", "--speedup", "5"]}
  scaling: {minReplicas: 1, maxReplicas: 2, targetTokensPerSecond: 40}
---
apiVersion: kapell.dev/v1alpha1
kind: TrainingJob
metadata: {name: tiny}
spec:
  entrypoint: python -c "import time; time.sleep(600)"
  opportunistic: true
  workerGroupSpecs: [{groupName: cpu, replicas: 1, resources: {cpu: "1"}}]
"""
StartFn = Callable[..., Instance]


def job_status(instance: Instance) -> dict[str, object]:
    shown = instance.kapell("get", "trainingjob", "tiny", "-o", "json")
    return dict(json.loads(shown.stdout).get("status", {}))


def test_an_opportunistic_job_hands_its_gpu_back_when_serving_scales_up(
    kapell_up: StartFn,
) -> None:
    instance = kapell_up(SPEC, args=("--serving-gpus", "3"))
    instance.wait_for(lambda: job_status(instance).get("lentGpus") == 1, 30, "the job to borrow")

    stop = threading.Event()

    def chat() -> None:
        client = openai.OpenAI(base_url=instance.gateway_url + "/v1", api_key="x", max_retries=0)
        while not stop.is_set():
            client.chat.completions.create(
                model="chat", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
            )

    callers = [threading.Thread(target=chat, daemon=True) for _ in range(4)]
    for caller in callers:
        caller.start()
    seen: list[dict[str, object]] = []

    def handed_back() -> bool:
        seen.append(job_status(instance))
        return "handed 1 GPU(s) back" in str(seen[-1].get("message"))

    try:
        instance.wait_for(handed_back, 90, "the job to hand its GPU back")
        assert seen[-1]["lentGpus"] == 0 and seen[-1]["phase"] == "Pending"
        instance.wait_for(lambda: len(instance.replicas()) == 2, 60, "a second replica")
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=30)
