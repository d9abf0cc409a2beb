"""Loading a causal LM and its tokenizer from local files only (kapell runs offline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from kapell.api.errors import NotFoundError


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: torch.device
    max_model_len: int
    vocab_size: int
    default_temperature: float
    default_top_p: float


def model_location(source: str) -> str:
    """A local path, or the Hub id of an ``hf://org/name`` source (read from the local cache)."""
    if source.startswith("hf://"):
        return source.removeprefix("hf://")
    return str(Path(source).expanduser())


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise NotFoundError(f"--dtype {name!r} is not a torch dtype (try float32 or bfloat16)")
    return dtype


def load_model(source: str, device_name: str, dtype_name: str) -> LoadedModel:
    """The model in eval mode on its device; a missing model is a one-line ``NotFoundError``."""
    hf_logging: Any = transformers.logging  # untyped; keep the engine quiet
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    location = model_location(source)
    if not source.startswith("hf://") and not Path(location).is_dir():
        raise NotFoundError(f"model {source!r}: no such directory (or use hf://org/name)")
    device = _device(device_name)
    if device.type == "cuda":
        # cuDNN's attention builds a plan for every new shape, and a continuous batch changes
        # shape at every step; the flash and memory-efficient kernels need no plan.
        torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(
            location, local_files_only=True, dtype=_dtype(dtype_name, device)
        )
    except OSError as exc:
        raise NotFoundError(
            f"model {source!r}: no local weights and tokenizer at {location!r} "
            f"(kapell does not download; put them there or in the Hugging Face cache): {exc}"
        ) from None
    model.to(device).eval()
    config = model.config
    sampling = getattr(model, "generation_config", None)
    temperature = getattr(sampling, "temperature", None)
    top_p = getattr(sampling, "top_p", None)
    max_len = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        max_model_len=int(max_len or tokenizer.model_max_length),
        vocab_size=int(model.get_input_embeddings().num_embeddings),
        default_temperature=1.0 if temperature is None else float(temperature),
        default_top_p=1.0 if top_p is None else float(top_p),
    )
