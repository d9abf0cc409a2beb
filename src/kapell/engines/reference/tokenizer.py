"""A transformers tokenizer as the batching backend uses it: no special tokens added to
prompts, and the model's chat template (or kapell's plain one) with a generation prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kapell.engines.openai_server import ChatMessage, render_chat_plainly


class TransformersTokenizer:
    """Wraps a loaded ``AutoTokenizer``; needs no import of transformers itself."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id: int | None = tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str:
        text: str = self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)
        return text

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        if self._tokenizer.chat_template is None:
            return render_chat_plainly(messages)
        rendered: str = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return rendered
