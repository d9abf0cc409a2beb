"""The OpenAI-compatible server layer shared by the engines kapell ships.

An engine implements :class:`Backend` (see :mod:`.protocol` for the contract) and its
``__main__`` calls :func:`run_engine`; :func:`create_app` is the Starlette app itself.
"""

from kapell.engines.openai_server.app import create_app
from kapell.engines.openai_server.launch import engine_argument_parser, run_engine
from kapell.engines.openai_server.protocol import (
    Backend,
    ChatMessage,
    EmbeddingsUnsupportedError,
    EngineStats,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
    render_chat_plainly,
)

__all__ = [
    "Backend",
    "ChatMessage",
    "EmbeddingsUnsupportedError",
    "EngineStats",
    "FinishReason",
    "GenerationChunk",
    "GenerationRequest",
    "SamplingParams",
    "create_app",
    "engine_argument_parser",
    "render_chat_plainly",
    "run_engine",
]
