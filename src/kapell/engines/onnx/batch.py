"""Continuous batching over an exported decoder in ONNX Runtime: one run steps every sequence.

The onnx engine's :class:`~kapell.engines.batching.DecodeBatch`: the same scheme as the
reference engine's, in numpy. The running sequences share one left-padded KV cache
(``[batch, heads, length, head_dim]`` per layer, keys and values) and a ``[batch, length]``
attention mask. Newcomers are prefilled together (with an empty past) and joined by padding the
shorter cache on the left; finished rows are dropped and columns that became padding for every
row trimmed. Positions are passed explicitly, so padding never shifts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kapell.engines.batching import Row

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Graph:
    """What the engine needs to know about the exported graph's inputs and outputs."""

    past_names: tuple[str, ...]
    present_names: tuple[str, ...]
    heads: int
    head_dim: int
    dtype: type[np.floating[Any]]
    has_hidden_state: bool


def describe(session: Any) -> Graph:
    """Read the cache layout from a session; a graph without the expected inputs is refused."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    missing = [n for n in ("input_ids", "position_ids", "attention_mask") if n not in inputs]
    if missing or "logits" not in outputs:
        raise ValueError(
            "the ONNX graph must take input_ids, position_ids, attention_mask and "
            f"past_key_values.N.key/value and return logits and present.N.key/value; "
            f"it has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
        )
    past = sorted(
        (n for n in inputs if n.startswith("past_key_values.")),
        key=lambda n: (int(n.split(".")[1]), n.rsplit(".", 1)[1] != "key"),
    )
    present = tuple(n.replace("past_key_values.", "present.", 1) for n in past)
    if not past or any(n not in outputs for n in present):
        raise ValueError(
            "the ONNX graph has no past_key_values.N inputs matching present.N outputs"
        )
    shape = inputs[past[0]].shape
    if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
        raise ValueError(f"{past[0]} must be [batch, heads, past, head_dim], not {shape}")
    dtype = np.float16 if inputs[past[0]].type == "tensor(float16)" else np.float32
    return Graph(tuple(past), present, shape[1], shape[3], dtype, "last_hidden_state" in outputs)


def _pad_left(cache: list[Array], mask: Array, length: int) -> tuple[list[Array], Array]:
    extra = length - mask.shape[1]
    if extra == 0:
        return cache, mask
    widths = ((0, 0), (0, 0), (extra, 0), (0, 0))
    return [np.pad(c, widths) for c in cache], np.pad(mask, ((0, 0), (extra, 0)))


class DecodeBatch:
    """The running sequences of one model and their shared KV cache."""

    def __init__(self, session: Any, graph: Graph) -> None:
        self.session = session
        self.graph = graph
        self.rows: list[Row] = []
        self._cache: list[Array] = []
        self._mask: Array = np.zeros((0, 0), dtype=np.int64)
        self._outputs = ["logits", *graph.present_names]

    @property
    def cache_tokens(self) -> int:
        """Cache slots held, padding included: rows times the longest sequence."""
        return int(self._mask.size)

    def _empty_past(self, rows: int) -> list[Array]:
        g = self.graph
        return [np.zeros((rows, g.heads, 0, g.head_dim), dtype=g.dtype) for _ in g.past_names]

    def _run(self, outputs: list[str], ids: Array, positions: Array, mask: Array,
             past: list[Array]) -> list[Array]:  # fmt: skip
        feed = {"input_ids": ids, "position_ids": positions, "attention_mask": mask}
        feed.update(zip(self.graph.past_names, past, strict=True))
        result: list[Array] = self.session.run(outputs, feed)
        return result

    def forward_padded(
        self, prompts: list[list[int]], outputs: list[str]
    ) -> tuple[list[Array], Array]:
        """Run left-padded ``prompts`` with an empty past; the outputs and the mask used."""
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = prompt
            mask[i, width - len(prompt) :] = 1
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        return self._run(outputs, ids, positions, mask, self._empty_past(len(prompts))), mask

    def admit(self, rows: list[Row], prompts: list[list[int]]) -> Array:
        """Prefill ``prompts`` in one run, join them to the batch; their last logits."""
        (logits, *cache), mask = self.forward_padded(prompts, self._outputs)
        if self.rows:
            length = max(mask.shape[1], self._mask.shape[1])
            old_cache, old_mask = _pad_left(self._cache, self._mask, length)
            cache, mask = _pad_left(cache, mask, length)
            cache = [np.concatenate([o, n]) for o, n in zip(old_cache, cache, strict=True)]
            mask = np.concatenate([old_mask, mask])
        self._cache, self._mask = cache, mask
        self.rows.extend(rows)
        last: Array = logits[:, -1, :]
        return last

    def step(self) -> Array:
        """Feed every row its ``next_token`` in one run; the logits that follow."""
        ids = np.array([[r.next_token] for r in self.rows], dtype=np.int64)
        positions = np.array([[r.length] for r in self.rows], dtype=np.int64)
        mask = np.pad(self._mask, ((0, 0), (0, 1)), constant_values=1)
        logits, *self._cache = self._run(self._outputs, ids, positions, mask, self._cache)
        self._mask = mask
        for row in self.rows:
            row.length += 1
        last: Array = logits[:, -1, :]
        return last

    def remove(self, keys: set[int]) -> None:
        """Drop the rows whose ``key`` is in ``keys`` and the padding only they needed."""
        keep = [i for i, r in enumerate(self.rows) if r.key not in keys]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self._cache, self._mask = [], self._mask[:0, :0]
            return
        mask = self._mask[keep]
        start = int(mask.shape[1] - max(r.length for r in self.rows))
        self._mask = mask[:, start:]
        self._cache = [np.ascontiguousarray(c[keep][:, :, start:]) for c in self._cache]

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Mean of the last hidden states over each input's tokens, L2-normalised."""
        (hidden,), mask = self.forward_padded([list(ids) for ids in inputs], ["last_hidden_state"])
        weights = mask[:, :, None].astype(np.float64)
        pooled = (hidden.astype(np.float64) * weights).sum(1) / weights.sum(1)
        norms = np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        vectors: list[list[float]] = (pooled / norms).tolist()
        return vectors
