"""Export a GPT-2-architecture model directory to ``model.onnx`` for kapell's ``onnx`` engine.

The quickstart serves the tiny Shakespeare model with ONNX Runtime, so it needs neither torch
nor transformers; this script is run once, with them, and its output is committed beside the
safetensors weights:

    PYTHONPATH=src .venv/bin/python scripts/export_onnx.py   # needs the 'reference' and 'export' extras

The graph is GPT-2's forward pass written out here with explicit inputs and outputs, so one
graph serves both the prefill of a left-padded batch and each decode step with its KV cache
(the names follow the usual convention for decoder exports):

    inputs   input_ids [batch, seq] int64, position_ids [batch, seq] int64,
             attention_mask [batch, past + seq] int64 (0 for padding),
             past_key_values.{i}.key / .value [batch, heads, past, head_dim] float32
    outputs  logits [batch, seq, vocab], last_hidden_state [batch, seq, hidden] (after the final
             layer norm, for embeddings), present.{i}.key / .value [batch, heads, past + seq, head_dim]

After exporting, the script runs the graph with ONNX Runtime and compares it with transformers'
``GPT2LMHeadModel`` on a padded prefill and on cached decode steps, and fails if any logit
differs by more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "examples/models/tiny-shakespeare"
OPSET = 18
TOLERANCE = 1e-4


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class ExportedGPT2(nn.Module):
    """GPT-2's forward pass over an explicit KV cache, with the weights of a loaded model."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        config = model.config
        if config.model_type != "gpt2" or config.activation_function != "gelu_new":
            raise SystemExit(f"only GPT-2 with gelu_new is exported, not {config.model_type}")
        if config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn:
            raise SystemExit(
                "scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn unsupported"
            )
        self.heads = int(config.n_head)
        self.width = int(config.n_embd)
        self.head_dim = self.width // self.heads
        self.scale = 1.0 / math.sqrt(self.head_dim) if config.scale_attn_weights else 1.0
        self.eps = float(config.layer_norm_epsilon)
        self.body = model.transformer
        self.lm_head = model.lm_head

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        body = self.body
        seq = input_ids.shape[1]
        total = attention_mask.shape[1]
        # Query i sits at cache index total - seq + i and sees keys up to it that are not padding.
        keys = torch.arange(total, device=input_ids.device)
        queries = torch.arange(seq, device=input_ids.device) + (total - seq)
        allowed = (keys[None, :] <= queries[:, None])[None, None] & (
            attention_mask[:, None, None, :] > 0
        )
        lowest = torch.tensor(torch.finfo(torch.float32).min)
        hidden = body.wte(input_ids) + body.wpe(position_ids)
        presents: list[torch.Tensor] = []
        for i, block in enumerate(body.h):
            x = block.ln_1(hidden)
            attn = block.attn
            q, k, v = (x @ attn.c_attn.weight + attn.c_attn.bias).split(self.width, dim=2)
            k = torch.cat([past[2 * i], self._split(k)], dim=2)
            v = torch.cat([past[2 * i + 1], self._split(v)], dim=2)
            presents += [k, v]
            scores = (self._split(q) @ k.transpose(-1, -2)) * self.scale
            weights = torch.softmax(torch.where(allowed, scores, lowest), dim=-1)
            out = (weights @ v).transpose(1, 2).reshape(hidden.shape)
            hidden = hidden + (out @ attn.c_proj.weight + attn.c_proj.bias)
            mlp = block.mlp
            x = _gelu_new(block.ln_2(hidden) @ mlp.c_fc.weight + mlp.c_fc.bias)
            hidden = hidden + (x @ mlp.c_proj.weight + mlp.c_proj.bias)
        hidden = body.ln_f(hidden)
        return (self.lm_head(hidden), hidden, *presents)


def io_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return (
        ["input_ids", "position_ids", "attention_mask", *past],
        ["logits", "last_hidden_state", *present],
    )


def export(model_dir: Path, out: Path) -> None:
    model = GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    model.eval()
    module = ExportedGPT2(model).eval()
    layers = int(model.config.n_layer)
    inputs, outputs = io_names(layers)
    batch, seq, past_len = 2, 3, 4
    example = (
        torch.zeros((batch, seq), dtype=torch.long),
        torch.zeros((batch, seq), dtype=torch.long),
        torch.ones((batch, past_len + seq), dtype=torch.long),
        *(torch.zeros((batch, module.heads, past_len, module.head_dim)) for _ in range(2 * layers)),
    )
    auto = torch.export.Dim.AUTO  # the exporter works out how the sizes relate
    cache = {0: auto, 2: auto}
    shapes = (
        {0: auto, 1: auto},
        {0: auto, 1: auto},
        {0: auto, 1: auto},
        tuple([cache] * (2 * layers)),
    )
    with torch.inference_mode():
        torch.onnx.export(
            module,
            example,
            str(out),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )
    _tidy(out, layers)


def _tidy(path: Path, layers: int) -> None:
    """Name the symbolic sizes of the inputs and outputs (the exporter numbers them), drop
    source-location strings, and record where the graph came from."""
    import onnx

    graph = onnx.load(str(path))
    inputs, outputs = io_names(layers)
    sizes = {
        "input_ids": ["batch", "seq"],
        "position_ids": ["batch", "seq"],
        "attention_mask": ["batch", "total"],
        "logits": ["batch", "seq", None],
        "last_hidden_state": ["batch", "seq", None],
        **{name: ["batch", None, "past", None] for name in inputs[3:]},
        **{name: ["batch", None, "total", None] for name in outputs[2:]},
    }
    for value in [*graph.graph.input, *graph.graph.output]:
        for dim, name in zip(value.type.tensor_type.shape.dim, sizes[value.name], strict=True):
            if name is not None:
                dim.dim_param = name
    del graph.graph.value_info[:]  # internal shapes, with the old names; inferred at load
    strip_provenance(graph)
    onnx.helper.set_model_props(
        graph, {"architecture": "GPT2LMHeadModel", "exported_by": "kapell scripts/export_onnx.py"}
    )
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def strip_provenance(model: Any) -> None:
    """Drop what the exporter records about where it ran (stack traces and source paths in node
    doc strings and metadata): it names this machine's files and changes nothing at run time."""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for function in model.functions:
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]
    del model.graph.metadata_props[:]


def verify(model_dir: Path, path: Path) -> float:
    """The largest logit difference between ONNX Runtime and transformers (prefill + decode)."""
    import onnxruntime

    model = GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    model.eval()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    config = model.config
    heads, head_dim = config.n_head, config.n_embd // config.n_head
    prompts = [[20, 43, 50, 50, 53], [13, 14, 15], [46, 47, 1, 58, 46, 43, 56, 43]]
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    positions = np.maximum(mask.cumsum(-1) - 1, 0)
    feed: dict[str, np.ndarray] = {
        "input_ids": ids,
        "position_ids": positions,
        "attention_mask": mask,
    }
    empty = np.zeros((len(prompts), heads, 0, head_dim), dtype=np.float32)
    inputs, outputs = io_names(config.n_layer)
    feed.update({name: empty for name in inputs[3:]})
    worst = 0.0
    generated = [list(p) for p in prompts]
    for _ in range(6):
        result = session.run(outputs, feed)
        last = result[0][:, -1, :]
        for row, tokens in enumerate(generated):
            with torch.inference_mode():
                expected = model(torch.tensor([tokens])).logits[0, -1].numpy()
            worst = max(worst, float(np.abs(last[row] - expected).max()))
        nxt = last.argmax(-1)
        for row, token in enumerate(nxt):
            generated[row].append(int(token))
        mask = np.pad(mask, ((0, 0), (0, 1)), constant_values=1)
        feed = {
            "input_ids": nxt[:, None].astype(np.int64),
            "position_ids": np.array([[len(t) - 1] for t in generated], dtype=np.int64),
            "attention_mask": mask,
            **dict(zip(inputs[3:], result[2:], strict=True)),
        }
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model directory")
    parser.add_argument("--out", type=Path, help="default: MODEL/model.onnx")
    args = parser.parse_args()
    out = args.out or args.model / "model.onnx"
    torch.manual_seed(0)
    export(args.model, out)
    worst = verify(args.model, out)
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, "max_logit_diff": worst}))
    if worst > TOLERANCE:
        raise SystemExit(f"ONNX Runtime and transformers differ by {worst} > {TOLERANCE}")


if __name__ == "__main__":
    main()
