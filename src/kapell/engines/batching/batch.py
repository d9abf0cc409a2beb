"""The model-specific part of continuous batching: what an engine writes for the scheduler.

A :class:`DecodeBatch` holds the running sequences of one model and their shared KV cache, in
whatever layout the engine's runtime wants, and runs the forward passes: ``admit`` prefills
newcomers together and joins them to the batch, ``step`` decodes one token for every row,
``remove`` drops finished rows. Both return one row of logits per sequence, on the host, in the
engine's own array type (``L``); a :data:`Sampler` of the same engine turns such a row into a
token id. The scheduler never looks inside either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

L = TypeVar("L")
L_co = TypeVar("L_co", covariant=True)

Sampler = Callable[[L, float, float], int]
"""``(logits, temperature, top_p) -> token id`` for one request, with its own random stream,
so a seeded request draws the same tokens whatever else shares its batch; ``temperature == 0``
is greedy."""


@dataclass
class Row:
    """One sequence in the batch: how many tokens its cache holds, and the token to feed next."""

    key: int
    length: int
    next_token: int = -1


class DecodeBatch(Protocol[L_co]):
    """The running sequences of one model and their shared KV cache."""

    @property
    def rows(self) -> list[Row]:
        """The sequences in the batch, in the order of the logits ``admit`` and ``step`` return."""
        ...

    @property
    def cache_tokens(self) -> int:
        """Cache slots held, padding included (for the KV-cache usage metric)."""
        ...

    def admit(self, rows: list[Row], prompts: list[list[int]]) -> Iterable[L_co]:
        """Prefill ``prompts`` in one forward pass and join them to the batch; their last logits."""
        ...

    def step(self) -> Iterable[L_co]:
        """Feed every row its ``next_token`` in one forward pass; the logits that follow."""
        ...

    def remove(self, keys: set[int]) -> None:
        """Drop the rows whose ``key`` is in ``keys``."""
        ...

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One vector per input: the mean of the last hidden states, L2-normalised."""
        ...
