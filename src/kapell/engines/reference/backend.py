"""The reference engine's backend: a transformers model behind kapell's OpenAI server.

The shared :class:`~kapell.engines.batching.BatchingBackend` does the serving; this module
loads the model on its worker thread (torch and transformers are imported there, so
``/health`` says 503 while they import and the weights load) as a
:class:`~kapell.engines.reference.batch.DecodeBatch` with torch sampling.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from kapell.engines.batching import BatchedModel, BatchingBackend
from kapell.engines.reference.tokenizer import TransformersTokenizer


@dataclass(frozen=True)
class ReferenceOptions:
    """How to load and run the model."""

    model: str
    served_name: str
    device: str = "auto"
    dtype: str = "auto"
    max_num_seqs: int = 16
    threads: int | None = None


class ReferenceBackend(BatchingBackend):
    """A Hugging Face causal LM, continuously batched on a worker thread."""

    def __init__(self, options: ReferenceOptions, registry: CollectorRegistry) -> None:
        super().__init__(
            functools.partial(_load, options),
            served_name=options.served_name,
            max_num_seqs=options.max_num_seqs,
            registry=registry,
            name="kapell-reference",
        )


def _load(options: ReferenceOptions) -> BatchedModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from kapell.engines.reference.batch import DecodeBatch
    from kapell.engines.reference.loading import load_model
    from kapell.engines.reference.sampling import sampler

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    loaded = load_model(options.model, options.device, options.dtype)
    return BatchedModel(
        batch=DecodeBatch(loaded.model, loaded.device),
        sampler=sampler,
        tokenizer=TransformersTokenizer(loaded.tokenizer),
        max_model_len=loaded.max_model_len,
        vocab_size=loaded.vocab_size,
        default_sampling=(loaded.default_temperature, loaded.default_top_p),
        system_fingerprint=(
            f"kapell-reference-transformers-{transformers.__version__}-{loaded.device.type}"
        ),
    )
