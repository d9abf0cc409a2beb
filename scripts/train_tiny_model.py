"""Train the tiny character-level Shakespeare model that the offline quickstart serves.

A GPT-2-architecture model (transformers' ``GPT2LMHeadModel``, four layers, 128 wide) learns
tinyshakespeare one character per token on the CPU in a few minutes. It is saved as safetensors
with a character tokenizer that ``AutoTokenizer`` loads and a chat template, so the reference
engine serves it like any Hugging Face model. Everything is seeded, so a rerun on the same torch
build gives the same weights.

    nice -n 10 .venv/bin/python scripts/train_tiny_model.py
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = REPO / "../shared/data/text/tinyshakespeare.txt"
DEFAULT_OUT = REPO / "examples/models/tiny-shakespeare"
END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"
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
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=UNKNOWN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )


def portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class and carry the chat template the way transformers 4.x reads
    them too (5.x writes its own class name and keeps the template in a separate file)."""
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2) + "\n")


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
    model.eval()
    losses = [
        float(model(input_ids=(x := batch(data, 8, block, gen)), labels=x).loss)
        for _ in range(batches)
    ]
    model.train()
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--tokens-per-step", type=int, default=1024)
    parser.add_argument("--block", type=int, default=256, help="final context, in characters")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1337)
    # One thread: on a shared, busy machine two threads spin against each other and run slower.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    text = args.text.read_text(encoding="utf-8")
    tokenizer = build_tokenizer(text)
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    split = int(len(ids) * 0.9)
    train, val = ids[:split], ids[split:]

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
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
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    started_s = time.monotonic()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, warmup=100)
        block = context_for_step(step, args.steps, args.block)
        x = batch(train, args.tokens_per_step // block, block, gen)
        loss = model(
            input_ids=x, position_ids=positions(len(x), block, args.block, gen), labels=x
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            elapsed = time.monotonic() - started_s
            print(f"step {step:5d}  loss {loss.item():.3f}  {elapsed:6.0f} s", flush=True)

    train_s = time.monotonic() - started_s
    report = {
        "steps": args.steps,
        "tokens_per_step": args.tokens_per_step,
        "train_s": round(train_s, 1),
        "train_loss": round(mean_loss(model, train, args.block, 10), 4),
        "val_loss": round(mean_loss(model, val, args.block, 10), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": args.seed,
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # Served without a temperature, the model samples as configured here (vLLM and kapell's
    # reference engine read the generation config): a little cooler than 1.0 reads better.
    model.generation_config.update(**SERVING_DEFAULTS)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    portable_tokenizer_config(args.out / "tokenizer_config.json")
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
