"""Continuous batching over a Hugging Face causal LM: one forward pass steps every sequence.

The reference engine's :class:`~kapell.engines.batching.DecodeBatch`. The running sequences
share one left-padded KV cache (``[batch, heads, length, dim]`` per layer) and a
``[batch, length]`` attention mask. Sequences that arrive are prefilled together and joined to
the batch by padding the shorter cache on the left; finished ones are dropped by row, and
columns that became padding for every row are trimmed, so the cache is never longer than the
longest live sequence. Positions are passed explicitly, so padding never shifts them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kapell.engines.batching import Row

KV = list[tuple[torch.Tensor, torch.Tensor]]


def _pad_left(kv: KV, mask: torch.Tensor, length: int) -> tuple[KV, torch.Tensor]:
    extra = length - mask.shape[1]
    if extra == 0:
        return kv, mask
    padded = [(F.pad(k, (0, 0, extra, 0)), F.pad(v, (0, 0, extra, 0))) for k, v in kv]
    return padded, F.pad(mask, (extra, 0))


def _cache_tensors(cache: Any) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_from(kv: KV) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def _cache_keyword(model: Any) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache``; take whichever this one has."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def _last_logits(out: Any) -> torch.Tensor:
    logits: torch.Tensor = out.logits[:, -1, :].float().cpu()
    return logits


class DecodeBatch:
    """The running sequences of one model and their shared KV cache."""

    def __init__(self, model: Any, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._cache_keyword = _cache_keyword(model)
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=device)

    @property
    def cache_tokens(self) -> int:
        """Cache slots held, padding included: rows times the longest sequence."""
        return int(self._mask.numel())

    @torch.inference_mode()
    def admit(self, rows: list[Row], prompts: list[list[int]]) -> torch.Tensor:
        """Prefill ``prompts`` in one forward pass, join them to the batch; their last logits
        (float32, on the CPU, as sampling reads them)."""
        width = max(len(p) for p in prompts)
        ids = torch.zeros((len(prompts), width), dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt, device=self.device)
            mask[i, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        new_kv = _cache_tensors(_returned_cache(out))
        if self.rows:
            length = max(width, self._mask.shape[1])
            old_kv, old_mask = _pad_left(_cache_tensors(self._cache), self._mask, length)
            new_kv, mask = _pad_left(new_kv, mask, length)
            new_kv = [
                (torch.cat([ok, nk]), torch.cat([ov, nv]))
                for (ok, ov), (nk, nv) in zip(old_kv, new_kv, strict=True)
            ]
            mask = torch.cat([old_mask, mask])
        self._cache, self._mask = _cache_from(new_kv), mask
        self.rows.extend(rows)
        return _last_logits(out)

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Feed every row its ``next_token`` in one forward pass; the logits that follow."""
        ids = torch.tensor([[r.next_token] for r in self.rows], device=self.device)
        positions = torch.tensor([[r.length] for r in self.rows], device=self.device)
        mask = F.pad(self._mask, (0, 1), value=1)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_keyword: self._cache},
        )
        self._cache, self._mask = _returned_cache(out), mask
        for row in self.rows:
            row.length += 1
        return _last_logits(out)

    @torch.inference_mode()
    def remove(self, keys: set[int]) -> None:
        """Drop the rows whose ``key`` is in ``keys`` and the padding only they needed."""
        keep = [i for i, r in enumerate(self.rows) if r.key not in keys]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self._cache, self._mask = None, self._mask[:0, :0]
            return
        index = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, index)
        start = int(mask.shape[1] - max(r.length for r in self.rows))
        self._mask = mask[:, start:]
        self._cache = _cache_from(
            [
                (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
                for k, v in _cache_tensors(self._cache)
            ]
        )

    @torch.inference_mode()
    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Mean of the last hidden states over each input's tokens, L2-normalised."""
        width = max(len(ids) for ids in inputs)
        ids = torch.zeros((len(inputs), width), dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for i, tokens in enumerate(inputs):
            ids[i, : len(tokens)] = torch.tensor(list(tokens), device=self.device)
            mask[i, : len(tokens)] = 1
        hidden = self.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states[-1]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        vectors: list[list[float]] = F.normalize(pooled.float(), dim=-1).cpu().tolist()
        return vectors
