"""The tiny character-level GPT-2 of the quickstart: tokenizer, model shape, batches, schedule.

Shared by ``scripts/train_tiny_model.py`` (one process, the bundled weights) and
``kapell.train.shakespeare`` (the same model trained by Ray Train on several workers), so both
train and save the same thing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"
CONTEXT = 256
SERVING_DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}
# A chat turn is the message text and a blank line; the model then writes the next speech.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] | trim }}\n\n{% endfor %}"


def build_tokenizer(text: str) -> PreTrainedTokenizerFast:
    """One token per character seen in ``text``, plus end-of-text and unknown."""
    chars = sorted(set(text))
    vocab = {c: i for i, c in enumerate([*chars, END_OF_TEXT, UNKNOWN])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=UNKNOWN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=CONTEXT,
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """Four layers, 128 wide, no dropout: about 0.8 M parameters."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=CONTEXT,
        n_embd=128,
        n_layer=4,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``text`` split 90/10 into training and validation data."""
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    split = int(len(ids) * 0.9)
    return ids[:split], ids[split:]


def portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class and carry the chat template the way transformers 4.x reads
    them too (5.x writes its own class name and keeps the template in a separate file)."""
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2) + "\n")


def save(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """A directory the reference engine serves like any Hugging Face model."""
    out.mkdir(parents=True, exist_ok=True)
    # Served without a temperature, the model samples as configured here (vLLM and kapell's
    # reference engine read the generation config): a little cooler than 1.0 reads better.
    model.generation_config.update(**SERVING_DEFAULTS)  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out / "tokenizer_config.json")


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def context_for_step(step: int, steps: int, final: int) -> int:
    """Sequence-length warm-up: a quarter of the final context for the first half of training,
    half of it for the next quarter, the full context at the end (short sequences make early
    steps cheap)."""
    if step < steps // 2:
        return final // 4
    if step < steps * 3 // 4:
        return final // 2
    return final


def positions(size: int, block: int, final: int, gen: torch.Generator) -> torch.Tensor:
    """Position ids that start at a random offset, so short training sequences still teach
    every position embedding the server will use (up to ``final``)."""
    offsets = torch.randint(0, final - block + 1, (size, 1), generator=gen)
    return offsets + torch.arange(block)


def batch(data: torch.Tensor, size: int, block: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(data) - block, (size,), generator=gen)
    return torch.stack([data[s : s + block] for s in starts.tolist()])


@torch.no_grad()
def mean_loss(model: GPT2LMHeadModel, data: torch.Tensor, block: int, batches: int) -> float:
    gen = torch.Generator().manual_seed(1)
    model.eval()  # type: ignore[no-untyped-call]
    losses = [
        float(model(input_ids=(x := batch(data, 8, block, gen)), labels=x).loss)
        for _ in range(batches)
    ]
    model.train()
    return sum(losses) / len(losses)
