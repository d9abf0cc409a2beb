"""Per-model usage counters the gateway keeps in process.

The autoscaler loop (in the same process for the local backend) reads ``Meter.snapshot``
every tick and feeds ``kapell.policy.autoscale``; counters are cumulative so a reader computes
rates from two snapshots without the gateway knowing the reader's period.

Each replica's modelled power is split among the requests in flight on it
(``policy.energy.RequestEnergy``), so every request carries the joules it is charged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kapell.api import Model
from kapell.api.errors import NotFoundError
from kapell.api.units import parse_quantity
from kapell.policy.energy import RequestEnergy, default_power_models, replica_busy_power_w


def busy_power_w(model: Model) -> float | None:
    """A replica's modelled power while serving; None for a GPU without a power model."""
    gpu = model.spec.resources.gpu
    try:
        return replica_busy_power_w(
            default_power_models(),
            gpu.models[0] if gpu is not None and gpu.models else None,
            gpu.milli_gpus if gpu is not None else 0,
            parse_quantity(model.spec.resources.cpu),
        )
    except NotFoundError:
        return None


@dataclass
class ModelUsage:
    """Usage of one model since the gateway started (cumulative) and right now (gauges)."""

    requests: int = 0
    """Requests admitted (answered or failed), counted once each at completion."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    in_flight: int = 0
    """Requests sent to a replica and not yet finished."""
    queue_depth: int = 0
    """Requests waiting in the activator for a ready replica or a free slot."""
    rejected: int = 0
    """Requests answered 429/503 by the activator (queue full, waited too long)."""
    admitted_tokens: float = 0.0
    """Prompt plus expected output tokens of every request, counted when it arrives: demand
    as it happens, for the autoscaler (completion counts lag by a request's duration)."""
    busy_closed_s: float = 0.0
    """Seconds with at least one request in flight, over finished busy periods."""
    busy_since_s: float | None = None
    """Monotonic start of the current busy period, if one is open."""
    request_energy_j: float = 0.0
    """Modelled joules charged to finished requests (``RequestEnergy``)."""

    def arrive(self, prompt_tokens: int, max_tokens: int) -> None:
        """A request arrived; its output is expected to be this model's mean so far."""
        expected = self.generated_tokens / self.requests if self.requests else max_tokens
        self.admitted_tokens += prompt_tokens + min(expected, max_tokens)

    def admit(self, now_s: float) -> None:
        """A request goes upstream at ``now_s``."""
        if self.in_flight == 0:
            self.busy_since_s = now_s
        self.in_flight += 1

    def finish(self, now_s: float) -> None:
        """A request that went upstream is done at ``now_s``."""
        self.in_flight -= 1
        if self.in_flight == 0 and self.busy_since_s is not None:
            self.busy_closed_s += now_s - self.busy_since_s
            self.busy_since_s = None

    def busy_seconds(self, now_s: float) -> float:
        """Seconds the model had requests in flight: how long its replicas did useful work."""
        open_s = now_s - self.busy_since_s if self.busy_since_s is not None else 0.0
        return self.busy_closed_s + open_s

    @property
    def tokens(self) -> int:
        """Prompt plus generated tokens: the autoscaler's demand signal."""
        return self.prompt_tokens + self.generated_tokens


class Meter:
    """Usage per model name. Mutated only from the gateway's event loop."""

    def __init__(self) -> None:
        self._usage: dict[str, ModelUsage] = {}
        self._energy: dict[str, RequestEnergy] = {}
        self._tenant_tokens: dict[tuple[str, str], tuple[int, int]] = {}

    def charge_tenant(self, model: str, tenant: str, prompt: int, generated: int) -> None:
        """Count a finished request's tokens against the tenant that sent it."""
        before_in, before_out = self._tenant_tokens.get((model, tenant), (0, 0))
        self._tenant_tokens[model, tenant] = (before_in + prompt, before_out + generated)

    def tenant_tokens(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Cumulative (prompt, generated) tokens per (model, tenant): what spend accounting
        reads."""
        return dict(self._tenant_tokens)

    def replica_energy(self, replica_id: str, power_w: float) -> RequestEnergy:
        """The energy split of one replica (created on first use, dropped when it goes idle)."""
        found = self._energy.get(replica_id)
        if found is None:
            found = self._energy[replica_id] = RequestEnergy(power_w)
        return found

    def release_energy(self, replica_id: str) -> None:
        """Forget an idle replica's split, so replicas that come and go leave nothing behind."""
        found = self._energy.get(replica_id)
        if found is not None and not found.in_flight:
            del self._energy[replica_id]

    def usage(self, model: str) -> ModelUsage:
        """The live (mutable) record for ``model``; created on first use."""
        record = self._usage.get(model)
        if record is None:
            record = self._usage[model] = ModelUsage()
        return record

    def snapshot(self, model: str) -> ModelUsage:
        """A copy of ``model``'s usage, safe to keep (zeros for a model never seen)."""
        return replace(self._usage.get(model) or ModelUsage())

    def models(self) -> list[str]:
        """Models with any recorded usage."""
        return list(self._usage)
