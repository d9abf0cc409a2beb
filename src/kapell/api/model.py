"""The ``Model`` kind: an inference service for one model, from source to SLO.

A Model says where the weights are, which engine serves them, what one replica needs
(including a fraction of a GPU), how the replica count follows token demand, how the
gateway spreads requests, and which latency targets count as "good".
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kapell.api.cel import cel
from kapell.api.meta import Resource, Spec, Status
from kapell.api.units import Duration, Quantity, parse_duration

MIG_PROFILES = (
    "1g.5gb",
    "1g.10gb",
    "1g.10gb+me",
    "1g.12gb",
    "1g.20gb",
    "2g.10gb",
    "2g.20gb",
    "2g.24gb",
    "3g.20gb",
    "3g.40gb",
    "3g.48gb",
    "4g.20gb",
    "4g.40gb",
    "4g.48gb",
    "7g.40gb",
    "7g.80gb",
    "7g.96gb",
    "1g.18gb",
    "1g.35gb",
    "2g.35gb",
    "3g.71gb",
    "4g.71gb",
    "7g.141gb",
)

EngineName = Literal[
    "reference", "onnx", "sim", "hashembed", "vllm", "sglang", "llama.cpp", "external"
]
RECIPE_ENGINES = ("sim", "hashembed")
"""Engines whose ``source.uri`` names a built-in recipe (a latency profile, an embedding
scheme), not weights: no path to resolve or mount."""
RoutingStrategy = Literal["least-tokens", "prefix-affinity", "round-robin"]


_ONE_SOURCE = "set exactly one of 'uri' (weights to serve) or 'url' (external)"
_ONE_GPU_KIND = "set only one of 'count', 'migProfile', 'milli' or 'auto'"
WHOLE_GPU = "gpu"
"""The replica size of one whole GPU (``status.replicaSize``); every other size is a MIG profile."""
_AUTO_NEEDS_SIM = (
    "resources.gpu.auto sizes replicas from the engine's latency model, which only engine "
    "'sim' has: set engine.name: sim, or a size (count, migProfile or milli)"
)
_ENGINE_SOURCE = "engine 'external' takes source.url; every other engine takes source.uri"


class ModelSource(Spec):
    """Where the weights come from.

    ``uri`` is one of: a local path (relative paths are relative to the spec file),
    ``file:///abs/path``, ``hf://org/name[@revision]``, ``s3://bucket/prefix``,
    ``pvc://claim-name/path``, ``trainingjob://NAME`` (what that TrainingJob trained, once it
    has succeeded). ``url`` is for the ``external`` engine: an
    OpenAI-compatible base URL that kapell does not run.
    """

    uri: str | None = None
    url: str | None = None
    served_name: str | None = Field(
        default=None, description="Model id that the engine reports; defaults to metadata.name"
    )

    @model_validator(mode="after")
    @cel("has(self.uri) != has(self.url)", _ONE_SOURCE)
    def _one_of(self) -> ModelSource:
        if (self.uri is None) == (self.url is None):
            raise ValueError(_ONE_SOURCE)
        return self

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is None:
            return uri
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        if scheme not in ("file", "hf", "s3", "pvc", "trainingjob"):
            raise ValueError(
                f"unsupported scheme {scheme!r}: use a path, file://, hf://, s3://, pvc:// "
                "or trainingjob://"
            )
        if scheme == "trainingjob" and not re.fullmatch(
            r"trainingjob://[a-z0-9]([-a-z0-9]*[a-z0-9])?", uri
        ):
            raise ValueError("expected trainingjob://NAME (a TrainingJob in the same namespace)")
        if scheme == "hf" and not re.fullmatch(r"hf://[\w.-]+/[\w.-]+(@[\w./-]+)?", uri):
            raise ValueError("expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
        if scheme in ("s3", "pvc") and not re.fullmatch(rf"{scheme}://[a-z0-9][\w.-]*(/.*)?", uri):
            raise ValueError(f"expected {scheme}://{'BUCKET' if scheme == 's3' else 'CLAIM'}/PATH")
        return uri

    @property
    def scheme(self) -> str:
        """``file``, ``hf``, ``s3``, ``pvc``, ``trainingjob`` or ``url``."""
        if self.url is not None:
            return "url"
        assert self.uri is not None
        return self.uri.split("://", 1)[0] if "://" in self.uri else "file"


class EngineSpec(Spec):
    """Which engine serves the model, with extra arguments passed through verbatim."""

    name: EngineName = "reference"
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class GPURequest(Spec):
    """A whole, partial or sliced GPU for one replica. Set at most one of count, mig, milli,
    auto. ``auto`` (``gpu: auto`` for short) lets the sizing policy pick the slice or whole GPU
    from the Model's observed demand (``status.replicaSize`` says which, and why)."""

    count: Annotated[int, Field(ge=0, le=64)] = 0
    mig_profile: str | None = Field(
        default=None,
        description="A MIG profile, e.g. '1g.10gb'",
        json_schema_extra={"enum": list(MIG_PROFILES)},
    )
    milli: Annotated[int | None, Field(ge=1, le=999)] = Field(
        default=None, description="A time-sliced or MPS share of one GPU, in thousandths"
    )
    memory: Quantity | None = Field(default=None, description="Minimum GPU memory, e.g. '20Gi'")
    models: list[str] = Field(default_factory=list, description="Acceptable GPU models")
    sharing: Literal["time-slicing", "mps"] = "time-slicing"
    auto: bool = Field(
        default=False,
        description="Size each replica from observed demand: a MIG slice or a whole GPU",
    )

    @field_validator("mig_profile")
    @classmethod
    def _known_profile(cls, profile: str | None) -> str | None:
        if profile is not None and profile not in MIG_PROFILES:
            raise ValueError(f"unknown MIG profile {profile!r}; known: {', '.join(MIG_PROFILES)}")
        return profile

    @model_validator(mode="after")
    @cel(
        "(has(self.count) && self.count > 0 ? 1 : 0) + (has(self.migProfile) ? 1 : 0)"
        " + (has(self.milli) ? 1 : 0) + (has(self.auto) && self.auto ? 1 : 0) <= 1",
        _ONE_GPU_KIND,
    )
    def _one_kind(self) -> GPURequest:
        kinds = [self.count > 0, self.mig_profile is not None, self.milli is not None, self.auto]
        if sum(kinds) > 1:
            raise ValueError(_ONE_GPU_KIND)
        return self

    @property
    def milli_gpus(self) -> int:
        """The request in thousandths of a GPU (a MIG slice counts by its compute fraction)."""
        if self.milli is not None:
            return self.milli
        if self.mig_profile is not None:
            return int(self.mig_profile.split("g.", 1)[0]) * 1000 // 7
        return self.count * 1000


class Resources(Spec):
    """What one replica needs."""

    cpu: Quantity = "1"
    memory: Quantity = "2Gi"
    gpu: GPURequest | None = None

    @field_validator("gpu", mode="before")
    @classmethod
    def _auto_shorthand(cls, gpu: object) -> object:
        """``gpu: auto`` is ``gpu: {auto: true}``; any other string is a mistake worth naming."""
        if isinstance(gpu, str):
            if gpu != "auto":
                raise ValueError(
                    f"expected 'auto' or a mapping (count, migProfile, milli, auto), got {gpu!r}"
                )
            return {"auto": True}
        return gpu


class ScalingSpec(Spec):
    """How the replica count follows demand. ``minReplicas: 0`` enables scale to zero."""

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    target_tokens_per_second: Annotated[float | None, Field(gt=0)] = Field(
        default=None,
        description="Per-replica token throughput to aim for (prompt + generated); with "
        "resources.gpu auto, per whole GPU (a slice's replicas aim for its share)",
    )
    scale_to_zero_after: Duration = "5m"
    warm_pool: Annotated[int, Field(ge=0, le=100)] = 0
    autoscaler: Literal["tokens", "concurrency", "static"] = "tokens"

    @model_validator(mode="after")
    @cel(
        "self.minReplicas <= self.maxReplicas",
        "minReplicas exceeds maxReplicas",
        field_path=".minReplicas",
    )
    def _ordered(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) exceeds maxReplicas ({self.max_replicas})"
            )
        return self


class RoutingSpec(Spec):
    """How the gateway chooses a replica for each request."""

    strategy: RoutingStrategy = "least-tokens"
    prefix_load_bound: Annotated[float, Field(ge=1.0, le=10.0)] = 1.25


class SLOSpec(Spec):
    """Latency targets: a request is good when both hold."""

    ttft: Duration = "1s"
    tpot: Duration = "100ms"

    @property
    def ttft_s(self) -> float:
        return parse_duration(self.ttft)

    @property
    def tpot_s(self) -> float:
        return parse_duration(self.tpot)


class ModelSpec(Spec):
    """The desired state of a Model."""

    source: ModelSource
    engine: EngineSpec = Field(default_factory=EngineSpec)
    resources: Resources = Field(default_factory=Resources)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    slo: SLOSpec = Field(default_factory=SLOSpec)
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Kubernetes only: labels a node must carry to run a replica (ignored locally)",
    )
    priority: Annotated[int, Field(ge=-1000, le=1000)] = Field(
        default=0,
        description="How important this Model's requests are against others sharing a pool "
        "(higher first; Kubernetes only: the InferenceObjective's priority)",
    )

    @model_validator(mode="after")
    @cel("(has(self.engine) && self.engine.name == 'external') == has(self.source.url)",
         _ENGINE_SOURCE)  # fmt: skip
    def _engine_fits_source(self) -> ModelSpec:
        if (self.engine.name == "external") != (self.source.url is not None):
            raise ValueError(_ENGINE_SOURCE)
        return self

    @model_validator(mode="after")
    @cel("!(has(self.resources) && has(self.resources.gpu) && has(self.resources.gpu.auto)"
         " && self.resources.gpu.auto) || (has(self.engine) && self.engine.name == 'sim')",
         _AUTO_NEEDS_SIM)  # fmt: skip
    def _auto_needs_a_latency_model(self) -> ModelSpec:
        gpu = self.resources.gpu
        if gpu is not None and gpu.auto and self.engine.name != "sim":
            raise ValueError(_AUTO_NEEDS_SIM)
        return self

    @property
    def sized_automatically(self) -> bool:
        """Whether the sizing policy picks each replica's GPU size (``resources.gpu.auto``)."""
        return self.resources.gpu is not None and self.resources.gpu.auto


class ModelStatus(Status):
    """Observed state of a Model."""

    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int = 0
    endpoints: list[str] = Field(default_factory=list)
    replica_size: str | None = Field(
        default=None,
        description="With resources.gpu.auto: the size replicas run at (a MIG profile or 'gpu')",
    )


class Model(Resource):
    """An inference service for one model."""

    kind: Literal["Model"] = "Model"
    spec: ModelSpec
    status: ModelStatus = Field(default_factory=ModelStatus)

    @property
    def start_failure(self) -> str | None:
        """The controller's message when it could not start a replica at all (an engine that
        is not installed, weights that are not there, no node with room), else None."""
        for c in self.status.conditions:
            if (c.type, c.status) == ("Degraded", "True") and c.reason in START_FAILURES:
                return c.message
        return None


START_FAILURES = ("StartFailed", "Unschedulable")
"""``Degraded`` reasons that mean no replica starts until the spec or the machines change."""
