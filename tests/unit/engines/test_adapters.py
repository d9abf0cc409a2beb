"""Engine adapters render the commands each engine expects (the engines run where installed)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kapell.api import Model
from kapell.api.errors import BackendError
from kapell.api.loader import load_text
from kapell.engines.adapters import (
    ADAPTERS,
    LaunchContext,
    adapter_for,
    local_problems,
    resolve_weights,
)


def model(engine: str, source: str = "uri: hf://meta-llama/Llama-3.1-8B", extra: str = "") -> Model:
    [m] = load_text(
        "apiVersion: kapell.dev/v1alpha1\nkind: Model\nmetadata: {name: llama}\n"
        f"spec:\n  source: {{{source}}}\n  engine: {{name: {engine}, args: ['--x', '1']}}\n{extra}"
    )
    assert isinstance(m, Model)
    return m


CTX = LaunchContext("127.0.0.1", 9001, "/w")


def test_vllm_command_caps_memory_for_a_fractional_gpu() -> None:
    m = model("vllm", extra="  resources: {gpu: {milli: 500}}\n")
    assert adapter_for(m).command(m, CTX) == [
        "vllm", "serve", "/w", "--host", "127.0.0.1", "--port", "9001",
        "--served-model-name", "llama", "--gpu-memory-utilization", "0.45", "--x", "1",
    ]  # fmt: skip


def test_sglang_and_llama_cpp_commands() -> None:
    m = model("sglang")
    assert adapter_for(m).command(m, CTX)[:4] == [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
    ]
    m = model("llama.cpp")
    cmd = adapter_for(m).command(m, CTX)
    assert cmd[0] == "llama-server" and cmd[cmd.index("--alias") + 1] == "llama"
    assert cmd[-2:] == ["--x", "1"]


def test_kapell_engines_run_with_this_python() -> None:
    for engine in ("reference", "sim"):
        m = model(engine)
        assert adapter_for(m).command(m, CTX)[:3] == [
            sys.executable,
            "-m",
            f"kapell.engines.{engine}",
        ]


def test_every_adapter_maps_the_core_metrics() -> None:
    for name, adapter in ADAPTERS.items():
        if adapter.runs_process:
            assert "ENGINE_REQUESTS_RUNNING" in adapter.metric_names, name
            assert "ENGINE_GENERATION_TOKENS" in adapter.metric_names, name


def test_missing_engine_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendError, match="needs 'vllm' on PATH"):
        ADAPTERS["vllm"].check_installed()


def test_weights_resolution(tmp_path: Path) -> None:
    assert resolve_weights(model("vllm")) == "meta-llama/Llama-3.1-8B"
    with pytest.raises(BackendError, match="need the Kubernetes backend"):
        resolve_weights(model("vllm", "uri: s3://bucket/llama"))
    with pytest.raises(BackendError, match="does not exist"):
        resolve_weights(model("reference", f"uri: {tmp_path}/none"))
    assert (
        resolve_weights(model("external", "url: http://10.0.0.1:8000/v1"))
        == "http://10.0.0.1:8000/v1"
    )


def test_local_problems_name_the_field_and_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    # The path checks below are the point, whether or not torch is installed here.
    monkeypatch.setitem(ADAPTERS, "reference", replace(ADAPTERS["reference"], python_modules=()))
    assert local_problems(model("sim", "uri: h100-llama3-8b")) == []
    assert local_problems(model("sim", "uri: file://h100-llama3-8b")) == []
    [(loc, message)] = local_problems(model("sim", "uri: h100-nope"))
    assert loc == ("spec", "source", "uri") and "unknown latency profile 'h100-nope'" in message
    [(loc, message)] = local_problems(model("vllm"))
    assert loc == ("spec", "engine", "name") and "needs 'vllm' on PATH" in message
    (tmp_path / "w").mkdir()
    assert local_problems(model("reference", f"uri: {tmp_path}/w")) == []
    [(loc, message)] = local_problems(model("reference", f"uri: {tmp_path}/none"))
    assert (loc, message) == (
        ("spec", "source", "uri"),
        f"model path {tmp_path}/none does not exist",
    )
    assert local_problems(model("external", "url: http://10.0.0.1:8000/v1")) == []
    assert local_problems(model("hashembed", "uri: hash-ngrams-256")) == []
    [(loc, message)] = local_problems(model("hashembed", "uri: ./weights"))
    assert loc == ("spec", "source", "uri") and "expected hash-ngrams-N" in message
    assert resolve_weights(model("hashembed", "uri: hash-ngrams-64")) == "hash-ngrams-64"


def test_a_python_engine_without_its_package_is_a_clear_error() -> None:
    adapter = ADAPTERS["sglang"]
    missing = replace(adapter, python_modules=("kapell_no_such_package",))
    with pytest.raises(BackendError, match=r"needs the Python package.*kapell_no_such_package"):
        missing.check_installed()
