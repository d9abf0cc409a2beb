"""Engine adapters: how to launch an engine, when it is ready, and what its metrics are called.

Adding an engine means adding one adapter here; controllers and backends never change.
Every engine is read through vLLM's metric names; an adapter maps its own names onto them.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kapell.api import metrics
from kapell.api.errors import BackendError
from kapell.api.model import RECIPE_ENGINES, Model


@dataclass(frozen=True)
class LaunchContext:
    """Where one replica runs: its port and the local path of the weights."""

    host: str
    port: int
    weights: str


@dataclass(frozen=True)
class EngineAdapter:
    """One engine's launch command, readiness probe and metric names."""

    name: str
    readiness_path: str = "/health"
    metric_names: Mapping[str, str] = field(default_factory=dict)
    runs_process: bool = True
    python_modules: tuple[str, ...] = ()
    """Packages the engine imports from this Python (checked before launch)."""
    install_hint: str = "install it or choose another engine"

    def command(self, model: Model, ctx: LaunchContext) -> list[str]:
        """The argv that starts one replica; the engine's own args are appended verbatim."""
        served = model.spec.source.served_name or model.metadata.name
        return [*self._base(model, ctx, served), *model.spec.engine.args]

    def _base(self, model: Model, ctx: LaunchContext, served: str) -> list[str]:
        raise NotImplementedError

    def executable(self) -> str | None:
        """The program this adapter needs on PATH, if any (checked before launch)."""
        return None

    def check_installed(self) -> None:
        """Raise a ``BackendError`` saying what is missing if the engine cannot run here."""
        exe = self.executable()
        if exe is not None and shutil.which(exe) is None:
            raise BackendError(f"engine {self.name!r} needs {exe!r} on PATH; {self.install_hint}")
        missing = [m for m in self.python_modules if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendError(
                f"engine {self.name!r} needs the Python package(s) {', '.join(missing)}, "
                f"not installed for {sys.executable}; {self.install_hint}"
            )


_VLLM_NAMES = {
    key: value for key, value in vars(metrics).items() if key.startswith("ENGINE_")
}  # vLLM is the reference naming: identity map.


@dataclass(frozen=True)
class _Kapell(EngineAdapter):
    """An engine shipped inside kapell, run with this Python."""

    def _base(self, model: Model, ctx: LaunchContext, served: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            f"kapell.engines.{self.name}",
            "--model",
            ctx.weights,
            "--served-name",
            served,
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
        ]


@dataclass(frozen=True)
class _VLLM(EngineAdapter):
    def executable(self) -> str:
        return "vllm"

    def _base(self, model: Model, ctx: LaunchContext, served: str) -> list[str]:
        return [
            "vllm",
            "serve",
            ctx.weights,
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--served-model-name",
            served,
            *_gpu_memory_args(model),
        ]


@dataclass(frozen=True)
class _SGLang(EngineAdapter):
    def executable(self) -> str:
        return sys.executable

    def _base(self, model: Model, ctx: LaunchContext, served: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model-path",
            ctx.weights,
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--served-model-name",
            served,
        ]


@dataclass(frozen=True)
class _LlamaCpp(EngineAdapter):
    def executable(self) -> str:
        return "llama-server"

    def _base(self, model: Model, ctx: LaunchContext, served: str) -> list[str]:
        return [
            "llama-server",
            "--model",
            ctx.weights,
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--alias",
            served,
            "--metrics",
        ]


@dataclass(frozen=True)
class _External(EngineAdapter):
    """An OpenAI-compatible URL that kapell routes to but does not run."""

    def _base(self, model: Model, ctx: LaunchContext, served: str) -> list[str]:
        raise BackendError("the external engine runs no process")


def _gpu_memory_args(model: Model) -> list[str]:
    """vLLM pre-allocates 90% of a GPU; a fractional request must cap that."""
    gpu = model.spec.resources.gpu
    if gpu is not None and (gpu.milli is not None or gpu.mig_profile is not None):
        return ["--gpu-memory-utilization", f"{max(gpu.milli_gpus, 50) / 1000 * 0.9:.2f}"]
    return []


ADAPTERS: dict[str, EngineAdapter] = {
    "reference": _Kapell(
        "reference",
        metric_names=_VLLM_NAMES,
        python_modules=("torch", "transformers"),
        install_hint="install kapell's 'reference' extra (pip install 'kapell[reference]')",
    ),
    "onnx": _Kapell(
        "onnx",
        metric_names=_VLLM_NAMES,
        python_modules=("onnxruntime", "tokenizers", "jinja2"),
        install_hint="install kapell's 'onnx' extra (pip install 'kapell[onnx]')",
    ),
    "sim": _Kapell("sim", metric_names=_VLLM_NAMES),
    "hashembed": _Kapell("hashembed", metric_names=_VLLM_NAMES),
    "vllm": _VLLM("vllm", metric_names=_VLLM_NAMES),
    "sglang": _SGLang(
        "sglang",
        python_modules=("sglang",),
        metric_names={
            "ENGINE_REQUESTS_RUNNING": "sglang:num_running_reqs",
            "ENGINE_REQUESTS_WAITING": "sglang:num_queue_reqs",
            "ENGINE_PROMPT_TOKENS": "sglang:prompt_tokens_total",
            "ENGINE_GENERATION_TOKENS": "sglang:generation_tokens_total",
            "ENGINE_TTFT_SECONDS": "sglang:time_to_first_token_seconds",
        },
    ),
    "llama.cpp": _LlamaCpp(
        "llama.cpp",
        metric_names={
            "ENGINE_REQUESTS_RUNNING": "llamacpp:requests_processing",
            "ENGINE_REQUESTS_WAITING": "llamacpp:requests_deferred",
            "ENGINE_PROMPT_TOKENS": "llamacpp:prompt_tokens_total",
            "ENGINE_GENERATION_TOKENS": "llamacpp:tokens_predicted_total",
        },
    ),
    "external": _External("external", readiness_path="/v1/models", runs_process=False),
}


def adapter_for(model: Model) -> EngineAdapter:
    return ADAPTERS[model.spec.engine.name]


def local_problems(model: Model) -> list[tuple[tuple[str, ...], str]]:
    """What will stop ``model``'s replicas from starting on this machine, known without
    starting one: ``(field location, message)`` pairs, locations as the YAML spells them.

    An engine that is not installed, a ``sim`` latency profile that does not exist, local
    weights that are not there. Relative paths must already be absolute (the CLI makes them so,
    relative to the spec file).
    """
    problems: list[tuple[tuple[str, ...], str]] = []
    engine = model.spec.engine.name
    try:
        ADAPTERS[engine].check_installed()
    except BackendError as exc:
        problems.append((("spec", "engine", "name"), str(exc)))
    source = model.spec.source
    uri = (source.uri or "").removeprefix("file://")
    if engine == "sim":
        from kapell.engines.sim.latency import profile_names

        known = profile_names()
        if uri not in known:
            problems.append((
                ("spec", "source", "uri"),
                f"unknown latency profile {uri!r} for the sim engine; known: {', '.join(known)}",
            ))  # fmt: skip
    elif engine == "hashembed":
        from kapell.engines.hashembed.backend import dimensions_of

        try:
            dimensions_of(uri)
        except ValueError as exc:
            problems.append((("spec", "source", "uri"), str(exc)))
    elif source.scheme == "file" and not Path(uri).exists():
        problems.append((("spec", "source", "uri"), f"model path {uri} does not exist"))
    elif (
        engine == "onnx"
        and source.scheme == "file"
        and Path(uri).is_dir()
        and not (Path(uri) / "model.onnx").is_file()
    ):
        problems.append((
            ("spec", "source", "uri"),
            f"no model.onnx in {uri} for the onnx engine (export one with "
            "scripts/export_onnx.py, or use engine 'reference')",
        ))  # fmt: skip
    return problems


def resolve_weights(model: Model) -> str:
    """The local path or id an engine loads (the CLI has made relative paths absolute).

    ``hf://`` becomes the repo id (engines read the local Hugging Face cache), ``s3://`` and
    ``pvc://`` cannot be mounted on one machine and are rejected with the reason.
    """
    source = model.spec.source
    scheme = source.scheme
    if scheme == "url":
        return source.url or ""
    uri = source.uri or ""
    if scheme == "hf":
        return uri.removeprefix("hf://").split("@", 1)[0]
    if scheme in ("s3", "pvc"):
        raise BackendError(
            f"model {model.metadata.name}: {scheme}:// sources need the Kubernetes backend; "
            "locally, download the weights and use a path"
        )
    if model.spec.engine.name in RECIPE_ENGINES:
        return uri.removeprefix("file://")  # a latency profile or embedding recipe, not a path
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        raise BackendError(f"model {model.metadata.name}: source path {path} does not exist")
    return str(path.resolve())
