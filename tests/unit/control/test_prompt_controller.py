"""The Prompt controller over a real SQLite store, with the gateway's counters injected.

The clock and the counters are the test's: each step of a rollout is driven by what the
gateway would have counted, and the status is read back as `kapell get` shows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kapell.api.prompt import Prompt, VersionCounts
from kapell.backends.local.store import SQLiteStore
from kapell.control.prompt import PromptController

KEY = "Prompt/default/greet"


class World:
    """A store, a clock and the counters the gateway would keep."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(tmp_path / "state.db")
        self.now_s = 1000.0
        self.counts: dict[int, VersionCounts] = {}
        self.controller = PromptController(
            self.store, lambda key: dict(self.counts), lambda: self.now_s, lambda: "now"
        )

    def apply(self, version: int, steps: list[int] | None = None) -> None:
        rollout = {"steps": steps or [10, 50, 100], "stepInterval": "10s", "minRequests": 5}
        spec = {"model": "m", "version": version, "template": f"Hi {{{{name}}}} v{version}",
                "rollout": rollout}  # fmt: skip
        self.store.apply(Prompt.model_validate({"metadata": {"name": "greet"}, "spec": spec}))

    def serve(self, version: int, requests: int, errors: int = 0) -> None:
        old = self.counts.get(version, VersionCounts())
        self.counts[version] = VersionCounts(
            requests=old.requests + requests, errors=old.errors + errors
        )

    def status(self) -> dict[str, object]:
        prompt = self.store.get(KEY)
        assert isinstance(prompt, Prompt)
        return prompt.status.model_dump(by_alias=True)

    def weights(self) -> dict[int, tuple[int, str]]:
        prompt = self.store.get(KEY)
        assert isinstance(prompt, Prompt)
        return {v.version: (v.weight, v.state) for v in prompt.status.versions}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_the_first_version_serves_at_once(world: World) -> None:
    world.apply(1)
    assert world.controller.reconcile(KEY) is None
    assert world.weights() == {1: (100, "Stable")}
    assert world.status()["phase"] == "Stable"


def test_a_good_canary_goes_step_by_step_to_promotion(world: World) -> None:
    world.apply(1)
    world.controller.reconcile(KEY)
    world.apply(2)
    assert world.controller.reconcile(KEY) == 1.0  # step interval / 10
    assert world.weights() == {1: (90, "Stable"), 2: (10, "Canary")}
    world.serve(1, 90, errors=2)
    world.serve(2, 10)
    world.controller.reconcile(KEY)
    assert world.weights()[2] == (10, "Canary"), "moved on before the step interval"
    world.now_s += 10
    world.controller.reconcile(KEY)
    assert world.weights() == {1: (50, "Stable"), 2: (50, "Canary")}
    world.serve(1, 50)
    world.serve(2, 50, errors=1)
    world.now_s += 10
    assert world.controller.reconcile(KEY) is None
    assert world.weights() == {1: (0, "Retired"), 2: (100, "Stable")}
    status = world.status()
    assert status["phase"] == "Stable" and status["stableVersion"] == 2
    assert str(status["message"]).startswith("canary 2 promoted: to 100%")
    evidence = status["evidence"]
    assert isinstance(evidence, dict) and evidence["canary"]["requests"] == 60


def test_a_bad_canary_is_rolled_back_and_not_tried_again(world: World) -> None:
    world.apply(1)
    world.controller.reconcile(KEY)
    world.apply(2)
    world.controller.reconcile(KEY)
    for _ in range(4):
        world.serve(1, 45)
        world.serve(2, 5, errors=3)
        world.controller.reconcile(KEY)
    status = world.status()
    assert status["phase"] == "RolledBack" and status["rolledBack"] == [2]
    assert "canary 2 rolled back: errors: log-likelihood ratio" in str(status["message"])
    assert world.weights() == {1: (100, "Stable"), 2: (0, "RolledBack")}
    assert world.store.get(KEY).status.conditions[0].status == "False"  # type: ignore[union-attr]
    world.controller.reconcile(KEY)
    assert world.weights()[2] == (0, "RolledBack")
    world.apply(1)  # back to the stable version by hand: serving as before
    world.controller.reconcile(KEY)
    assert world.status()["phase"] == "Stable"
    world.apply(3)  # a new version gets its own canary
    world.controller.reconcile(KEY)
    assert world.weights()[3] == (10, "Canary")


def test_a_newer_version_replaces_a_running_canary(world: World) -> None:
    world.apply(1)
    world.controller.reconcile(KEY)
    world.apply(2)
    world.controller.reconcile(KEY)
    world.apply(3)
    world.controller.reconcile(KEY)
    assert world.weights() == {1: (90, "Stable"), 2: (0, "Retired"), 3: (10, "Canary")}


def test_counters_that_restart_are_read_from_zero(world: World) -> None:
    world.apply(1)
    world.controller.reconcile(KEY)
    world.apply(2)
    world.serve(1, 100)
    world.serve(2, 10)
    world.controller.reconcile(KEY)  # the canary starts: these counts are its baseline
    world.counts = {1: VersionCounts(requests=9), 2: VersionCounts(requests=1)}  # restarted
    world.controller.reconcile(KEY)
    evidence = world.status()["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["stable"]["requests"] == 9 and evidence["canary"]["requests"] == 1


def test_a_single_step_switches_at_once(world: World) -> None:
    world.apply(1, steps=[100])
    world.controller.reconcile(KEY)
    world.apply(2, steps=[100])
    assert world.controller.reconcile(KEY) is None
    assert world.weights() == {1: (0, "Retired"), 2: (100, "Stable")}
