"""Train the tiny Shakespeare model with Ray Train: data-parallel over CPU workers (DDP, gloo).

The entrypoint of ``examples/train-shakespeare.yaml``. Kapell runs it as a Ray job and passes
the job's shape in ``KAPELL_*`` variables (``kapell.api.jobenv``). Rank 0 reports every step
and every checkpoint (once Ray Train has registered it) as a progress line; a checkpoint every
``KAPELL_CHECKPOINT_INTERVAL`` steps holds the model, the optimizer and the step, so a worker group restarted by Ray Train
(a worker died) or a job resubmitted by kapell resumes from the newest one. At the end rank 0
writes a directory the reference engine serves to ``KAPELL_OUTPUT_URI``.

    python -m kapell.train.shakespeare --text ../shared/data/text/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from kapell.api.jobenv import JobEnv, progress_line
from kapell.train.tinygpt import (
    batch,
    build_model,
    build_tokenizer,
    context_for_step,
    encode,
    learning_rate,
    positions,
    save,
)

STATE_FILE = "state.pt"


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from the newest checkpoint if any, train, checkpoint."""
    import ray.train
    from ray.train.torch import prepare_model

    torch.set_num_threads(1)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    print(progress_line(worker=rank, pid=os.getpid()), flush=True)
    text = Path(config["text"]).read_text(encoding="utf-8")
    tokenizer = build_tokenizer(text)
    train, _ = encode(tokenizer, text)
    torch.manual_seed(config["seed"])  # the same initial weights on every rank
    model = prepare_model(build_model(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, weights_only=True)
        _inner(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"] + 1
        if rank == 0:
            print(progress_line(resumed=state["step"]), flush=True)
    steps, interval, final = config["steps"], config["interval"], config["block"]
    gen = torch.Generator().manual_seed(config["seed"] * 1000 + rank * 100_003 + start)
    per_worker = max(1, config["tokens_per_step"] // world)
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, config["lr"], warmup=min(100, steps // 10))
        block = context_for_step(step, steps, final)
        x = batch(train, max(1, per_worker // block), block, gen)
        loss = model(input_ids=x, position_ids=positions(len(x), block, final, gen), labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if rank == 0:
            print(progress_line(step=step, loss=round(loss.item(), 4)), flush=True)
        if (step + 1) % interval == 0 or step == steps - 1:
            _checkpoint(model, optimizer, step, rank, loss.item())
    if rank == 0:
        _save_output(_inner(model), tokenizer, config["output"])
        print(progress_line(output=config["output"]), flush=True)


def _checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, rank: int, loss: float
) -> None:
    """Every rank reports (Ray Train requires it); rank 0 alone carries the state."""
    import ray.train

    metrics = {"step": step, "loss": loss}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        state = {
            "model": _inner(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
        }
        torch.save(state, Path(directory) / STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    _wait_for_commit()
    print(progress_line(checkpoint=step), flush=True)


def _wait_for_commit() -> None:
    """Block until Ray Train's controller has registered every report so far.

    ``report`` returns once the checkpoint is uploaded, but a restarted worker group resumes
    from the controller's newest *registered* checkpoint, which lags by up to a poll interval:
    a worker lost in that gap resumes from the one before. Waiting here makes the progress
    line (and the TrainingJob's ``lastCheckpointStep``) promise only what a restart resumes
    from. Ray releases older than this API print without waiting.
    """
    import ray.train

    wait = getattr(ray.train, "get_all_reported_checkpoints", None)
    mode = getattr(ray.train, "CheckpointConsistencyMode", None)
    if wait is not None and mode is not None:
        wait(consistency_mode=mode.COMMITTED)


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel (one worker gets none): what checkpoints and
    the output hold."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


def _save_output(model: Any, tokenizer: Any, uri: str) -> None:
    """The served directory at ``uri``: a local path, or any URI pyarrow writes (``s3://``)."""
    if "://" not in uri or uri.startswith("file://"):
        save(model, tokenizer, Path(uri.removeprefix("file://")))
        return
    from pyarrow import fs

    with tempfile.TemporaryDirectory() as directory:
        save(model, tokenizer, Path(directory))
        target, path = fs.FileSystem.from_uri(uri)
        fs.copy_files(directory, path, destination_filesystem=target)


def main() -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tokens-per-step", type=int, default=1024)
    parser.add_argument("--block", type=int, default=256, help="final context, in characters")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    job = JobEnv.from_environ()
    config = {
        "text": str(args.text.resolve()),
        "steps": args.steps,
        "tokens_per_step": args.tokens_per_step,
        "block": args.block,
        "lr": args.lr,
        "seed": args.seed,
        "interval": job.checkpoint_interval,
        "output": job.output_uri,
    }
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=job.workers,
            use_gpu=False,
            resources_per_worker={"CPU": job.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=job.name,
            storage_path=job.checkpoint_uri,
            failure_config=FailureConfig(max_failures=job.max_restarts),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()


if __name__ == "__main__":
    main()
