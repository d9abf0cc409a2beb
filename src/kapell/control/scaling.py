"""The replica count the Model controller aims for, from the spec and recent demand.

``minReplicas: 0`` means scale to zero: a model that has seen no request for
``scaleToZeroAfter`` gets zero replicas; a request for it (the gateway's activator calls
``note_demand``) brings one back. ``warmPool`` keeps extra loaded replicas.
"""

from __future__ import annotations

from kapell.api.model import Model
from kapell.api.units import parse_duration


class DemandScaler:
    """``minReplicas`` plus warm pool, with scale from and to zero on observed demand."""

    def __init__(self) -> None:
        self._last_demand_s: dict[str, float] = {}

    def note_demand(self, model_key: str, now_s: float) -> None:
        """A request for the model arrived (or is waiting) at ``now_s``."""
        self._last_demand_s[model_key] = now_s

    def desired_replicas(self, model: Model, ready: int, now_s: float) -> int:
        scaling = model.spec.scaling
        base = scaling.min_replicas
        last = self._last_demand_s.get(model.key)
        idle_limit_s = parse_duration(scaling.scale_to_zero_after)
        if base == 0 and last is not None and now_s - last < idle_limit_s:
            base = 1
        if base == 0:
            return 0
        return min(base + scaling.warm_pool, scaling.max_replicas)
