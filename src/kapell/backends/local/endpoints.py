"""What the gateway should route to locally: the Models in the store, their ready replicas, and
the reason a Model cannot start, if it cannot.

The composition root publishes this into the gateway's in-memory endpoint source whenever a
replica changes phase, a Model is applied or deleted, or the controller writes a Model's status
(the backend does not import the gateway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kapell.api.model import Model
from kapell.api.replica import Endpoint, Replica
from kapell.backends.local.replicas import LocalReplicas
from kapell.backends.local.store import SQLiteStore

CRASH_LOOP_STARTS = 2
"""Failed starts in a row after which a replica is taken to be crash-looping: one failure may
be bad luck (a port taken between choosing and binding it), two in a row rarely are."""


@dataclass(frozen=True)
class Routable:
    """Every Model, the ready replicas of each, and why some cannot start (by model name)."""

    models: list[Model]
    ready: dict[str, list[Endpoint]]
    cannot_start: dict[str, str]


def routable(store: SQLiteStore, replicas: LocalReplicas) -> Routable:
    """The gateway's view of every stored Model and the supervisor's replicas."""
    models = [m for m in store.resources("Model") if isinstance(m, Model)]
    by_name: dict[str, list[Replica]] = {m.metadata.name: [] for m in models}
    for replica in replicas.all():
        name = replica.model_key.rsplit("/", 1)[-1]
        if name in by_name:
            by_name[name].append(replica)
    ready = {
        name: [Endpoint(name, r.id, r.url) for r in found if r.ready]
        for name, found in by_name.items()
    }
    reasons = {m.metadata.name: cannot_start(m, by_name[m.metadata.name]) for m in models}
    return Routable(
        models, ready, {name: reason for name, reason in reasons.items() if reason is not None}
    )


def cannot_start(model: Model, replicas: Sequence[Replica]) -> str | None:
    """Why ``model`` will not get a ready replica until its spec or this machine changes, or
    None while it has one or may still get one.

    Two cases: the controller could not start a replica at all (``Model.start_failure``: an
    engine that is not installed, weights that are not there), or every
    replica has failed ``CRASH_LOOP_STARTS`` starts in a row and none is ready.
    """
    if any(r.ready for r in replicas):
        return None
    if model.start_failure is not None:
        return model.start_failure
    if replicas and all(r.failed_starts >= CRASH_LOOP_STARTS for r in replicas):
        failures = "; ".join(f"{r.id}: {r.message}" for r in replicas)
        return f"every replica exits before it is ready ({failures})"
    return None
