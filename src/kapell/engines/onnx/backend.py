"""The onnx engine's backend: an exported decoder in ONNX Runtime behind kapell's OpenAI server.

The shared :class:`~kapell.engines.batching.BatchingBackend` does the serving; this module
loads the graph on its worker thread (onnxruntime is imported there, so ``/health`` says 503
while it loads) as a :class:`~kapell.engines.onnx.batch.DecodeBatch` with numpy sampling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from kapell.engines.batching import BatchedModel, BatchingBackend


@dataclass(frozen=True)
class OnnxOptions:
    """How to load and run the model."""

    model: str
    served_name: str
    max_num_seqs: int = 16
    threads: int | None = None


class OnnxBackend(BatchingBackend):
    """An exported causal LM, continuously batched on a worker thread."""

    def __init__(self, options: OnnxOptions, registry: CollectorRegistry) -> None:
        super().__init__(
            functools.partial(_load, options),
            served_name=options.served_name,
            max_num_seqs=options.max_num_seqs,
            registry=registry,
            name="kapell-onnx",
        )


def _load(options: OnnxOptions) -> BatchedModel:
    from kapell.engines.onnx.batch import DecodeBatch
    from kapell.engines.onnx.loading import load_model
    from kapell.engines.onnx.sampling import sampler

    model = load_model(options.model, options.threads)
    return BatchedModel(
        batch=DecodeBatch(model.session, model.graph),
        sampler=sampler,
        tokenizer=model.tokenizer,
        max_model_len=model.max_model_len,
        vocab_size=model.vocab_size,
        default_sampling=(model.default_temperature, model.default_top_p),
        system_fingerprint=f"kapell-onnx-onnxruntime-{model.onnxruntime_version}-cpu",
        no_embeddings=(
            None
            if model.graph.has_hidden_state
            else "this ONNX graph has no last_hidden_state output"
        ),
    )
