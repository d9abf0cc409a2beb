"""The onnx engine's own pieces: the graph's layout, tokenizer, chat template, loading, adapter.

The graph is the committed export of the tiny Shakespeare model (3.4 MB). Its batching and
sampling are checked beside the reference engine's, in ``test_batching.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kapell.api import Model
from kapell.api.errors import NotFoundError
from kapell.api.loader import load_text
from kapell.engines.adapters import LaunchContext, adapter_for, local_problems
from kapell.engines.openai_server import ChatMessage

MODEL_DIR = Path(__file__).resolve().parents[3] / "examples/models/tiny-shakespeare"


@pytest.fixture(scope="module")
def loaded() -> object:
    pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")
    pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
    from kapell.engines.onnx.loading import load_model

    return load_model(str(MODEL_DIR), threads=1)


def test_the_graph_layout_is_read_from_the_session(loaded: object) -> None:
    graph = loaded.graph  # type: ignore[attr-defined]
    assert graph.past_names[:2] == ("past_key_values.0.key", "past_key_values.0.value")
    assert graph.present_names[-1] == "present.3.value"
    assert (graph.heads, graph.head_dim, graph.has_hidden_state) == (4, 32, True)
    assert loaded.max_model_len == 256 and loaded.vocab_size == 67  # type: ignore[attr-defined]
    assert (loaded.default_temperature, loaded.default_top_p) == (0.8, 0.95)  # type: ignore[attr-defined]


def test_a_graph_without_a_kv_cache_is_refused() -> None:
    from kapell.engines.onnx.batch import describe

    def io(*names: str) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(name=n, shape=["batch", "seq"], type="tensor(int64)") for n in names
        ]

    session = SimpleNamespace(
        get_inputs=lambda: io("input_ids", "attention_mask"), get_outputs=lambda: io("logits")
    )
    with pytest.raises(ValueError, match="must take input_ids, position_ids"):
        describe(session)
    session = SimpleNamespace(
        get_inputs=lambda: io("input_ids", "position_ids", "attention_mask"),
        get_outputs=lambda: io("logits"),
    )
    with pytest.raises(ValueError, match="no past_key_values"):
        describe(session)


def test_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    from kapell.engines.onnx.loading import load_model

    with pytest.raises(NotFoundError, match="no such directory"):
        load_model(str(tmp_path / "none"), threads=1)
    with pytest.raises(NotFoundError, match=r"no model.onnx \(export one with"):
        load_model(str(tmp_path), threads=1)


def test_the_tokenizer_round_trips_and_renders_the_chat_template(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
    pytest.importorskip("jinja2", reason="the onnx engine needs the 'onnx' extra")
    from kapell.engines.onnx.tokenizer import TextTokenizer

    tokenizer = TextTokenizer(MODEL_DIR)
    text = "ROMEO:\nWhat light through yonder window breaks?"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 65
    assert tokenizer.decode([*ids[:2], 65], skip_special_tokens=True) == "RO"
    chat = [ChatMessage("user", " ROMEO: "), ChatMessage("user", "JULIET:")]
    assert tokenizer.render_chat(chat) == "ROMEO:\n\nJULIET:\n\n"

    shutil.copy(MODEL_DIR / "tokenizer.json", tmp_path / "tokenizer.json")
    bare = TextTokenizer(tmp_path)  # no tokenizer_config.json: no template, no end-of-text
    assert bare.chat_template is None and bare.eos_token_id is None
    assert bare.render_chat([ChatMessage("user", "hi")]) == "user: hi\nassistant:"


def test_a_template_from_chat_template_jinja_in_a_sandbox(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
    pytest.importorskip("jinja2", reason="the onnx engine needs the 'onnx' extra")
    from kapell.engines.onnx.tokenizer import TextTokenizer

    shutil.copy(MODEL_DIR / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": {"content": "<|endoftext|>"}}')
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
        "{% if add_generation_prompt %}{{ eos_token }}{% endif %}"
    )
    tokenizer = TextTokenizer(tmp_path)
    assert tokenizer.render_chat([ChatMessage("user", "a")]) == "user=a;<|endoftext|>"
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('no system role') }}")
    with pytest.raises(ValueError, match="no system role"):
        TextTokenizer(tmp_path).render_chat([ChatMessage("system", "x")])
    (tmp_path / "chat_template.jinja").write_text("{{ messages.__class__.__mro__ }}")
    with pytest.raises(Exception, match=r"unsafe|not safely"):
        TextTokenizer(tmp_path).render_chat([ChatMessage("user", "x")])


def _model(source: str) -> Model:
    [m] = load_text(
        "apiVersion: kapell.dev/v1alpha1\nkind: Model\nmetadata: {name: tiny}\n"
        f"spec:\n  source: {{uri: {source}}}\n  engine: {{name: onnx, args: ['--threads', '1']}}\n"
    )
    assert isinstance(m, Model)
    return m


def test_the_adapter_runs_the_engine_with_this_python(tmp_path: Path) -> None:
    m = _model(str(MODEL_DIR))
    assert adapter_for(m).command(m, LaunchContext("127.0.0.1", 9001, "/w")) == [
        sys.executable, "-m", "kapell.engines.onnx", "--model", "/w", "--served-name", "tiny",
        "--host", "127.0.0.1", "--port", "9001", "--threads", "1",
    ]  # fmt: skip
    problems = local_problems(_model(str(tmp_path)))
    assert (("spec", "source", "uri"), f"no model.onnx in {tmp_path} for the onnx engine "
            "(export one with scripts/export_onnx.py, or use engine 'reference')") in problems  # fmt: skip
