"""The onnx engine's pieces: batching, sampling, tokenizer, chat template, loading, adapter.

The graph is the committed export of the tiny Shakespeare model (3.4 MB), run by ONNX Runtime:
each sequence's logits inside a batch (joining late, padded on the left, with a neighbour
leaving) must equal its logits when run alone.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kapell.api import Model
from kapell.api.errors import NotFoundError
from kapell.api.loader import load_text
from kapell.engines.adapters import LaunchContext, adapter_for, local_problems
from kapell.engines.onnx.sampling import generator, sample_token
from kapell.engines.openai_server import ChatMessage

MODEL_DIR = Path(__file__).resolve().parents[3] / "examples/models/tiny-shakespeare"
STEPS = 10


@pytest.fixture(scope="module")
def loaded() -> object:
    pytest.importorskip("onnxruntime", reason="the onnx engine needs the 'onnx' extra")
    pytest.importorskip("tokenizers", reason="the onnx engine needs the 'onnx' extra")
    from kapell.engines.onnx.loading import load_model

    return load_model(str(MODEL_DIR), threads=1)


def _alone(loaded: object, prompt: list[int], feed: list[int]) -> np.ndarray:
    from kapell.engines.onnx.batch import DecodeBatch, Row

    batch = DecodeBatch(loaded.session, loaded.graph)  # type: ignore[attr-defined]
    row = Row(key=0, length=len(prompt))
    logits = [batch.admit([row], [prompt])[0]]
    for token in feed:
        row.next_token = token
        logits.append(batch.step()[0])
    return np.stack(logits)


def test_batched_logits_equal_logits_alone(loaded: object) -> None:
    from kapell.engines.onnx.batch import DecodeBatch, Row

    rng = np.random.default_rng(1)
    vocab = loaded.vocab_size - 2  # type: ignore[attr-defined]  # no special tokens
    prompts = [rng.integers(0, vocab, n).tolist() for n in (5, 2, 17)]
    feeds = [rng.integers(0, vocab, STEPS + 1).tolist() for _ in prompts]
    lengths = [STEPS + 1, 4, STEPS + 1]  # the second sequence leaves early
    expected = [
        _alone(loaded, p, f[: n - 1]) for p, f, n in zip(prompts, feeds, lengths, strict=True)
    ]

    batch = DecodeBatch(loaded.session, loaded.graph)  # type: ignore[attr-defined]
    seen: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}

    def record(rows: list[Row], logits: np.ndarray) -> None:
        for row, row_logits in zip(rows, logits, strict=True):
            seen[row.key].append(row_logits)
            row.next_token = feeds[row.key][len(seen[row.key]) - 1]
        batch.remove({r.key for r in batch.rows if len(seen[r.key]) >= lengths[r.key]})

    first = Row(key=0, length=len(prompts[0]))
    record([first], batch.admit([first], [prompts[0]]))
    for _ in range(3):
        record(list(batch.rows), batch.step())
    late = [Row(key=k, length=len(prompts[k])) for k in (1, 2)]
    record(late, batch.admit(late, [prompts[1], prompts[2]]))
    widths = []
    while batch.rows:
        widths.append(len(batch.rows))
        record(list(batch.rows), batch.step())

    assert max(widths) == 3
    for key, logits in seen.items():
        np.testing.assert_allclose(np.stack(logits), expected[key], atol=1e-4)
    assert batch.cache_tokens == 0


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


def test_greedy_takes_the_largest_logit() -> None:
    logits = np.array([0.1, 3.0, 2.9], dtype=np.float32)
    assert sample_token(logits, 0.0, 1.0, generator(0)) == 1


def test_small_top_p_keeps_only_the_top_token() -> None:
    logits = np.array([1.0, 1.2, 0.9, 1.1], dtype=np.float32)
    assert {sample_token(logits, 1.0, 0.05, generator(seed)) for seed in range(20)} == {1}


def test_seeded_sampling_is_repeatable_and_follows_the_distribution() -> None:
    logits = np.zeros(1000, dtype=np.float32)
    first = [sample_token(logits, 1.0, 1.0, rng) for rng in [generator(5)] * 5]
    again = [sample_token(logits, 1.0, 1.0, rng) for rng in [generator(5)] * 5]
    assert first == again and len(set(first)) > 1
    skewed = np.log(np.array([0.7, 0.2, 0.1]))
    rng = generator(3)
    draws = np.bincount([sample_token(skewed, 1.0, 1.0, rng) for _ in range(3000)], minlength=3)
    np.testing.assert_allclose(draws / 3000, [0.7, 0.2, 0.1], atol=0.03)
    # top_p 0.8 keeps the two most likely tokens (0.7 alone does not reach 0.8).
    rng = generator(4)
    kept = {sample_token(skewed, 1.0, 0.8, rng) for _ in range(300)}
    assert kept == {0, 1}


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
