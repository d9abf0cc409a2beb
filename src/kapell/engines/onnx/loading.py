"""Loading an exported model, its tokenizer and its defaults from a local directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kapell.api.errors import NotFoundError
from kapell.engines.onnx.batch import Graph, describe
from kapell.engines.onnx.tokenizer import TextTokenizer

GRAPH_FILE = "model.onnx"


@dataclass(frozen=True)
class LoadedModel:
    session: Any
    graph: Graph
    tokenizer: TextTokenizer
    max_model_len: int
    vocab_size: int
    default_temperature: float
    default_top_p: float
    onnxruntime_version: str


def model_files(source: str) -> tuple[Path, Path]:
    """The model directory and its graph: ``source`` is the directory or the ``.onnx`` file."""
    path = Path(source.removeprefix("file://")).expanduser()
    if path.suffix == ".onnx":
        return path.parent, path
    return path, path / GRAPH_FILE


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def load_model(source: str, threads: int | None) -> LoadedModel:
    """An ONNX Runtime session on the CPU; a missing file is a one-line ``NotFoundError``."""
    directory, graph_file = model_files(source)
    if not directory.is_dir():
        raise NotFoundError(f"model {source!r}: no such directory")
    if not graph_file.is_file():
        raise NotFoundError(
            f"model {source!r}: no {graph_file.name} (export one with scripts/export_onnx.py)"
        )
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the engine prints nothing but warnings
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(graph_file), options, providers=["CPUExecutionProvider"]
    )
    graph = describe(session)
    tokenizer = TextTokenizer(directory)
    config = _json(directory / "config.json")
    sampling = _json(directory / "generation_config.json")
    logits_shape = next(o.shape for o in session.get_outputs() if o.name == "logits")
    vocab = logits_shape[-1] if isinstance(logits_shape[-1], int) else tokenizer.vocab_size
    max_len = (
        config.get("max_position_embeddings")
        or config.get("n_positions")
        or tokenizer.model_max_length
    )
    if not isinstance(max_len, int):
        raise NotFoundError(
            f"model {source!r}: no context length in config.json (max_position_embeddings) "
            "or tokenizer_config.json (model_max_length)"
        )
    temperature, top_p = sampling.get("temperature"), sampling.get("top_p")
    return LoadedModel(
        session=session,
        graph=graph,
        tokenizer=tokenizer,
        max_model_len=max_len,
        vocab_size=int(vocab),
        default_temperature=1.0 if temperature is None else float(temperature),
        default_top_p=1.0 if top_p is None else float(top_p),
        onnxruntime_version=str(onnxruntime.__version__),
    )
