"""Continuous batching for the engines that run a model themselves (``reference``, ``onnx``).

The two engines differ in one place: how a forward pass runs over their KV cache (torch and
transformers' cache objects, or numpy arrays fed to ONNX Runtime) and how a token is drawn from
a row of logits. That part is a :class:`DecodeBatch` and a :data:`Sampler`, which each engine
writes. Everything else is here, once: the :class:`Scheduler` (which sequences run, admitting,
retiring, finish reasons), the incremental detokenizer, and :class:`BatchingBackend`, the
worker thread behind kapell's OpenAI server. Nothing here imports torch or numpy, so the
``onnx`` engine never imports torch.
"""

from kapell.engines.batching.backend import (
    BatchedModel,
    BatchingBackend,
    Tokenizer,
    add_batching_arguments,
)
from kapell.engines.batching.batch import DecodeBatch, Row, Sampler
from kapell.engines.batching.detokenize import Decoder, IncrementalDetokenizer
from kapell.engines.batching.scheduler import Scheduler, Submitted

__all__ = [
    "BatchedModel",
    "BatchingBackend",
    "DecodeBatch",
    "Decoder",
    "IncrementalDetokenizer",
    "Row",
    "Sampler",
    "Scheduler",
    "Submitted",
    "Tokenizer",
    "add_batching_arguments",
]
