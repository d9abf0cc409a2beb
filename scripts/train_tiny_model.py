"""Train the tiny character-level Shakespeare model that the offline quickstart serves.

A GPT-2-architecture model (``kapell.train.tinygpt``: transformers' ``GPT2LMHeadModel``, four
layers, 128 wide) learns tinyshakespeare one character per token on the CPU in a few minutes. It is saved as safetensors
with a character tokenizer that ``AutoTokenizer`` loads and a chat template, so the reference
engine serves it like any Hugging Face model. Everything is seeded, so a rerun on the same torch
build gives the same weights.

    nice -n 10 .venv/bin/python scripts/train_tiny_model.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kapell.train.tinygpt import (
    batch,
    build_model,
    build_tokenizer,
    context_for_step,
    encode,
    learning_rate,
    mean_loss,
    positions,
    save,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = REPO / "../shared/data/text/tinyshakespeare.txt"
DEFAULT_OUT = REPO / "examples/models/tiny-shakespeare"


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
    train, val = encode(tokenizer, text)
    model = build_model(tokenizer)
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
    save(model, tokenizer, args.out)
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
