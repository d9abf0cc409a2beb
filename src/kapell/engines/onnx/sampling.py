"""Choosing the next token from logits in numpy: greedy, temperature and nucleus (top-p)."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import numpy.typing as npt

from kapell.engines.batching import Sampler


def generator(seed: int | None) -> np.random.Generator:
    """A request's own random stream, so a seed repeats whatever else shares the batch."""
    return np.random.default_rng(secrets.randbits(63) if seed is None else seed)


def sampler(seed: int | None) -> Sampler[npt.NDArray[Any]]:
    """A request's sampler, drawing from its own :func:`generator`."""
    rng = generator(seed)

    def sample(logits: npt.NDArray[Any], temperature: float, top_p: float) -> int:
        return sample_token(logits, temperature, top_p, rng)

    return sample


def sample_token(
    logits: npt.NDArray[Any], temperature: float, top_p: float, rng: np.random.Generator
) -> int:
    """One token id from a row of logits; ``temperature == 0`` is greedy."""
    if temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    sorted_probs = probs[order]
    if top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = np.cumsum(sorted_probs) - sorted_probs >= top_p
        sorted_probs[outside] = 0.0
    cumulative = np.cumsum(sorted_probs)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(order[min(pick, len(order) - 1)])
