"""The replica count the Model controller aims for: ``policy.autoscale`` fed live demand.

One autoscaler per Model (reconfigured, not rebuilt, when its knobs change), fed a
``DemandSample`` each time the controller asks (and told the cold start the backend measured),
so scale-from-zero reacts the moment the gateway's activator reports a waiting request rather
than at the next sampling tick. The sample source is injected:
locally it reads the gateway's meter, in the simulator the twin's counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kapell.api.model import Model
from kapell.policy.autoscale import (
    AutoscaleConfig,
    Autoscaler,
    DemandSample,
    Tune,
    build_autoscaler,
    tuned_config,
)

COLD_START_CHANGE_FACTOR = 2.0
"""A measured cold start this many times larger or smaller than the one an autoscaler runs
with reconfigures it (the cold start sets how far ahead it looks and how long it waits)."""

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
        """``tune``: changes to the knobs each Model's spec sets (``tuned_config``)."""
        self._sample = sample
        self._tune = tune
        self._cold_start_s = cold_start_s
        self._on_decision = on_decision
        self._scalers: dict[str, _Built] = {}

    def _scaler(self, model: Model) -> Autoscaler:
        # A policy built anew knows no demand (its windows, its burst memory, the replicas it
        # holds through the scale-down delay), and rebuilding one dropped a loaded fleet to its
        # minimum mid-load (the twin-vs-`kapell up` comparison showed it). So a Model keeps its
        # policy, reconfigured when its knobs change (an edited spec.scaling, a resize), unless
        # the spec names another policy. The measured cold start counts as changed only when
        # it moves by COLD_START_CHANGE_FACTOR: each replica start re-measures it.
        cold_start_s = self._cold_start_s(model)
        built = self._scalers.get(model.key)
        if built is not None and not _moved(built.cold_start_s, cold_start_s):
            cold_start_s = built.cold_start_s
        config = tuned_config(model, cold_start_s=cold_start_s, tune=self._tune)
        kind = model.spec.scaling.autoscaler
        if built is None or built.kind != kind:
            built = _Built(kind, config, build_autoscaler(kind, config))
            self._scalers[model.key] = built
        elif built.config != config:
            built.autoscaler.reconfigure(config)
            built.config = config
        return built.autoscaler

    def forget(self, model_key: str) -> None:
        self._scalers.pop(model_key, None)

    def desired_replicas(self, model: Model, ready: int, now_s: float) -> int:
        scaler = self._scaler(model)
        scaler.observe(now_s, self._sample(model, ready))
        replicas = scaler.desired(now_s).replicas
        if self._on_decision is not None:
            self._on_decision(model, replicas)
        return replicas


@dataclass
class _Built:
    """One Model's policy and the knobs it runs with."""

    kind: str
    config: AutoscaleConfig
    autoscaler: Autoscaler

    @property
    def cold_start_s(self) -> float:
        return self.config.cold_start_s


def _moved(built_s: float, measured_s: float) -> bool:
    """Whether the cold start moved enough to count: first measured, or by the factor."""
    if built_s <= 0.0:
        return measured_s > 0.0
    return (
        not built_s / COLD_START_CHANGE_FACTOR <= measured_s <= built_s * COLD_START_CHANGE_FACTOR
    )
