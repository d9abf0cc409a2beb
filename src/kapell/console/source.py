"""What the console reads, and nothing it may change: the ``ConsoleSource`` protocol.

A source is built by a composition root (``cli/console_local.py`` for ``kapell up``,
``cli/console_cluster.py`` for the operator) from the parts that mode already has. Whatever a
mode cannot tell (placement locally, latency on a cluster) it answers with ``None``/empty and
the page says so, instead of the console guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kapell.api import Model, Resource
from kapell.api.replica import Replica
from kapell.console.series import Sample


@dataclass(frozen=True)
class ReplicaRow:
    """One replica as the console shows it: its state and where it runs."""

    id: str
    phase: str
    revision: str
    restarts: int = 0
    message: str = ""
    placement: str | None = None
    """Node, GPU and slice it was placed on; None where the mode does not place on GPUs."""

    @classmethod
    def of(cls, replica: Replica, placement: str | None = None) -> ReplicaRow:
        return cls(
            replica.id, str(replica.phase), replica.revision, replica.restarts, replica.message,
            placement,
        )  # fmt: skip


@dataclass(frozen=True)
class Event:
    """A change in a model's replicas (started, ready, crashed, stopped) or its scale."""

    at: str
    replica: str
    event: str
    message: str = ""


@dataclass(frozen=True)
class CarbonView:
    """The configured carbon-intensity source, its reading now and the next hours."""

    source: str | None
    """How the intensity is known (``constant 400 gCO2/kWh``, a file); None: none configured."""
    now_g_per_kwh: float | None = None
    ahead: Sequence[tuple[float, float]] = field(default_factory=tuple)
    """``(epoch_s, gCO2/kWh)`` for the coming hours, where the source has them."""


class ConsoleSource(Protocol):
    """Read-only views of one instance or cluster. Called from the console's event loop."""

    mode: Literal["local", "kubernetes"]

    def resources(self, kind: str) -> Sequence[Resource]:
        """Every resource of ``kind`` this mode knows (empty for a kind it does not carry)."""
        ...

    def carries(self, kind: str) -> bool:
        """Whether this mode runs resources of ``kind`` at all (else the page says so)."""
        ...

    def replicas(self, model: Model) -> Sequence[ReplicaRow]: ...

    def events(self, model: Model, limit: int) -> Sequence[Event]:
        """The latest ``limit`` events of ``model``, newest last."""
        ...

    def series(self, model: Model) -> Sequence[Sample]:
        """Recent samples of ``model``'s traffic, oldest first."""
        ...

    def spend(self) -> dict[str, Any] | None:
        """The spend report (``docs/spend-and-budgets.md``), or None where nothing is
        accounted."""
        ...

    def carbon(self) -> CarbonView: ...
