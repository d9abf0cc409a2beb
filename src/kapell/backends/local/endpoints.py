"""What the gateway should route to locally: the Models in the store and their ready replicas.

The composition root publishes this into the gateway's in-memory endpoint source whenever a
replica changes phase or a Model is applied or deleted (the backend does not import the gateway).
"""

from __future__ import annotations

from kapell.api.model import Model
from kapell.api.replica import Endpoint
from kapell.backends.local.replicas import LocalReplicas
from kapell.backends.local.store import SQLiteStore


def routable(
    store: SQLiteStore, replicas: LocalReplicas
) -> tuple[list[Model], dict[str, list[Endpoint]]]:
    """Every Model, and the ready replicas of each by model name."""
    models = [m for m in store.resources("Model") if isinstance(m, Model)]
    names = {m.metadata.name for m in models}
    ready: dict[str, list[Endpoint]] = {name: [] for name in names}
    for replica in replicas.all():
        name = replica.model_key.rsplit("/", 1)[-1]
        if replica.ready and name in names:
            ready[name].append(Endpoint(name, replica.id, replica.url))
    return models, ready
