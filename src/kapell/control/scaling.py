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
        self._scalers: dict[str, tuple[str, Autoscaler]] = {}

    def _scaler(self, model: Model) -> Autoscaler:
        # Rebuilt when the spec changes or the measured cold start does (to the second), so
        # the policy looks one real cold start ahead; both are rare.
        cold_start_s = round(self._cold_start_s(model))
        config = f"{model.spec.scaling.model_dump_json()}|{cold_start_s}"
        known = self._scalers.get(model.key)
        if known is None or known[0] != config:
            known = (config, autoscaler_for(model, cold_start_s=cold_start_s, tune=self._tune))
            self._scalers[model.key] = known
        return known[1]

    def desired_replicas(self, model: Model, ready: int, now_s: float) -> int:
        scaler = self._scaler(model)
        scaler.observe(now_s, self._sample(model, ready))
        replicas = scaler.desired(now_s).replicas
        if self._on_decision is not None:
            self._on_decision(model, replicas)
        return replicas
