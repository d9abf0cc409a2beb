"""A Hugging Face model directory's tokenizer and chat template, without transformers.

``tokenizer.json`` is read by the ``tokenizers`` library (the same code that transformers'
fast tokenizers run), the special tokens and the chat template come from
``tokenizer_config.json`` (or ``chat_template.jinja``), and the template is rendered by Jinja2
in a sandbox with the variables transformers gives it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kapell.api.errors import NotFoundError
from kapell.engines.openai_server import ChatMessage, render_chat_plainly


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


class TextTokenizer:
    """Encode, decode and render chats the way the model's transformers tokenizer does."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        if not path.is_file():
            raise NotFoundError(f"model {str(directory)!r}: no tokenizer.json")
        self._tokenizer = Tokenizer.from_file(str(path))
        config_path = directory / "tokenizer_config.json"
        config: dict[str, Any] = (
            json.loads(config_path.read_text()) if config_path.is_file() else {}
        )
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.eos_token_id = (
            None if self.eos_token is None else self._tokenizer.token_to_id(self.eos_token)
        )
        self.model_max_length = config.get("model_max_length")
        template_file = directory / "chat_template.jinja"
        template = config.get("chat_template")
        if template is None and template_file.is_file():
            template = template_file.read_text()
        self.chat_template: str | None = template if isinstance(template, str) else None
        self._compiled: Any = None

    @property
    def vocab_size(self) -> int:
        size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        return size

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str:
        text: str = self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)
        return text

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template with a generation prompt, or kapell's plain one if there is none."""
        if self.chat_template is None:
            return render_chat_plainly(messages)
        if self._compiled is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise ValueError(message)

            environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            environment.globals["raise_exception"] = raise_exception
            self._compiled = environment.from_string(self.chat_template)
        rendered: str = self._compiled.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )
        return rendered
