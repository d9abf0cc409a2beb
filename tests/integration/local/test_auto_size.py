"""``resources.gpu: auto`` through a real ``kapell up``: the sizing policy picks the replica
size, the sim engine serves on it, and ``get -o wide`` and ``describe`` say which and why."""

from __future__ import annotations

from tests.integration.local.test_local_backend import StartFn, client

AUTO_SPEC = """\
apiVersion: kapell.dev/v1alpha1
kind: Model
metadata: {name: sized}
spec:
  source: {uri: h100-llama3-8b}
  engine: {name: sim, args: ["--cold-start-s", "0.5", "--speedup", "20"]}
  resources: {gpu: auto}
  scaling: {minReplicas: 1, maxReplicas: 4}
"""
SMALLEST_SLICE = "3g.40gb"
"""The smallest H100 MIG slice that holds Llama-3-8B and meets the default SLO (1g and 2g
slices cannot hold its 15 GiB of weights plus one 8k-token sequence)."""


def test_a_model_sized_auto_serves_on_the_size_the_policy_chose(kapell_up: StartFn) -> None:
    instance = kapell_up(AUTO_SPEC, 1)
    [model] = [r for r in instance.status()["resources"] if r["metadata"]["name"] == "sized"]
    status = model["status"]
    # No demand has been seen: the smallest size that meets the SLO, and the status says so.
    assert status["replicaSize"] == SMALLEST_SLICE, status
    [sized] = [c for c in status["conditions"] if c["type"] == "Sized"]
    assert sized["status"] == "True" and sized["message"].startswith(SMALLEST_SLICE), sized
    assert "no demand" in sized["message"], sized

    answers = [
        client(instance).chat.completions.create(
            model="sized", messages=[{"role": "user", "content": "size me"}], max_tokens=8
        )
        for _ in range(3)
    ]
    # The engine times its steps as the slice would: its fingerprint names the sliced profile.
    for answer in answers:
        assert answer.choices[0].message.content
        assert (
            answer.system_fingerprint
            == f"kapell-sim:h100-llama3-8b@{SMALLEST_SLICE}:simulated-timings"
        )

    listed = instance.kapell("get", "model", "-o", "wide")
    assert listed.returncode == 0, listed.stderr
    assert f"auto: {SMALLEST_SLICE}" in listed.stdout, listed.stdout
    described = instance.kapell("describe", "model", "sized")
    assert described.returncode == 0, described.stderr
    assert "Sized" in described.stdout and "least GPU share" in described.stdout, described.stdout
