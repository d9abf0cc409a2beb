"""The demand report a gateway replica sends the operator: the wire format both sides share.

On a cluster several gateway replicas meter the same Models, and one operator scales them. Each
replica pushes its own cumulative counters and current gauges (see ``gateway.metering``) every
second, and at once when a request waits for a Model that has no ready replica (``wake``); the
operator sums the replicas' reports into the one demand sample its autoscaler reads.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEMAND_PATH = "/v1/demand"


class ModelDemand(BaseModel):
    """One Model's usage at one gateway replica: counters since it started, gauges now."""

    model_config = ConfigDict(extra="forbid")

    requests_total: float = Field(0.0, ge=0)
    tokens_total: float = Field(0.0, ge=0)
    admitted_tokens_total: float = Field(0.0, ge=0)
    prompt_tokens_total: float = Field(0.0, ge=0)
    """The prompt part of ``tokens_total`` (the sizing policy reads the mean prompt from it)."""
    in_flight: int = Field(0, ge=0)
    queue_depth: int = Field(0, ge=0)


class DemandReport(BaseModel):
    """What one gateway replica knows of demand now. Models are keyed ``namespace/name``."""

    model_config = ConfigDict(extra="forbid")

    gateway: str = Field(min_length=1, max_length=253)
    """The reporting replica, unique for its life (a restarted replica reports anew)."""
    models: dict[str, ModelDemand] = Field(default_factory=dict)
    wake: list[str] = Field(default_factory=list)
    """Models with requests held for capacity right now: the operator reconciles them at once."""
