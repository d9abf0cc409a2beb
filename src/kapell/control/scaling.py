"""The replica count the Model controller aims for: ``policy.autoscale`` fed live demand.

One autoscaler per Model (rebuilt when its ``spec.scaling`` changes), fed a ``DemandSample``
each time the controller asks (and told the cold start the backend measured), so scale-from-zero reacts the moment the gateway's activator
reports a waiting request rather than at the next sampling tick. The sample source is injected:
locally it reads the gateway's meter, in the simulator the twin's counters.
"""

from __future__ import annotations

from collections.abc import Callable

from kapell.api.model import Model
from kapell.policy.autoscale import Autoscaler, DemandSample, Tune, autoscaler_for

COLD_START_REBUILD_FACTOR = 2.0
"""A measured cold start this many times larger or smaller than the one an autoscaler was
built with rebuilds it (the cold start sets how far ahead it looks and how long it waits)."""

SampleFn = Callable[[Model, int], DemandSample]
"""Demand for a model now, given its ready replica count."""


class PolicyScaler:
    """Implements the controller's ``Scaler`` over the autoscale policy a Model names."""

    def __init__(
        self,
        sample: SampleFn,
        cold_start_s: Callable[[Model], float],
        on_decision: Callable[[Model, int], None] | None = None,
        tune: Tune | None = None,
    ) -> None:
        """``tune``: changes to the knobs each Model's spec sets (``autoscaler_for``)."""
        self._sample = sample
        self._tune = tune
        self._cold_start_s = cold_start_s
        self._on_decision = on_decision
        self._scalers: dict[str, tuple[str, float, Autoscaler]] = {}
        """Per model: the scaling spec and cold start its autoscaler was built for, and it."""

    def _scaler(self, model: Model) -> Autoscaler:
        # A rebuilt autoscaler starts without history (its windows, its burst memory, the
        # replicas it holds through the scale-down delay), so it is rebuilt only when the
        # spec changes or the measured cold start moves by COLD_START_REBUILD_FACTOR: each
        # replica start re-measures it, and rebuilding on every second of difference dropped
        # a loaded fleet to its minimum mid-load (the twin-vs-`kapell up` comparison showed it).
        cold_start_s = self._cold_start_s(model)
        spec = model.spec.scaling.model_dump_json()
        known = self._scalers.get(model.key)
        if known is None or known[0] != spec or _moved(known[1], cold_start_s):
            known = (spec, cold_start_s, autoscaler_for(
                model, cold_start_s=cold_start_s, tune=self._tune
            ))  # fmt: skip
            self._scalers[model.key] = known
        return known[2]

    def desired_replicas(self, model: Model, ready: int, now_s: float) -> int:
        scaler = self._scaler(model)
        scaler.observe(now_s, self._sample(model, ready))
        replicas = scaler.desired(now_s).replicas
        if self._on_decision is not None:
            self._on_decision(model, replicas)
        return replicas


def _moved(built_s: float, measured_s: float) -> bool:
    """Whether the cold start moved enough to rebuild: first measured, or by the factor."""
    if built_s <= 0.0:
        return measured_s > 0.0
    return (
        not built_s / COLD_START_REBUILD_FACTOR <= measured_s <= built_s * COLD_START_REBUILD_FACTOR
    )
