"""Choosing the next token from logits: greedy, temperature and nucleus (top-p) sampling."""

from __future__ import annotations

import secrets

import torch

from kapell.engines.batching import Sampler


def sampler(seed: int | None) -> Sampler[torch.Tensor]:
    """A request's sampler, drawing from its own ``torch.Generator`` (seeded, else random)."""
    generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)

    def sample(logits: torch.Tensor, temperature: float, top_p: float) -> int:
        return sample_token(logits, temperature, top_p, generator)

    return sample


def sample_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """One token id from a row of logits; ``temperature == 0`` is greedy.

    ``generator`` belongs to the request, so a seeded request draws the same tokens whatever
    else shares its batch.
    """
    if temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
