"""The kinds beside ``Model``: training jobs, vector stores, GPU pools and budgets.

``Prompt`` has a module of its own (``api.prompt``).

They start small: enough shared shape for the controllers that will grow around them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kapell.api.cel import cel
from kapell.api.meta import Name, Resource, Spec, Status
from kapell.api.model import Resources
from kapell.api.units import Duration, Quantity


class WorkerGroup(Spec):
    """Ray worker nodes of one shape (KubeRay's ``workerGroupSpecs`` entry)."""

    group_name: Name = "workers"
    replicas: Annotated[int, Field(ge=1, le=4096)] = 1
    resources: Resources = Field(default_factory=Resources)
    spot: bool = Field(
        default=False, description="May run on spot capacity (cheap, can be reclaimed)"
    )


class RuntimeEnv(Spec):
    """The driver's environment (a subset of Ray's ``runtime_env``).

    Locally ``workingDir`` is a directory on this machine (relative to the spec file) the
    entrypoint runs in; nothing is uploaded.
    """

    working_dir: str | None = None
    env_vars: dict[str, str] = Field(default_factory=dict)


class CheckpointSpec(Spec):
    """Where checkpoints go and how often: a restarted job resumes from the newest."""

    uri: str | None = Field(
        default=None,
        description="A path (relative to the spec file) or s3://BUCKET/PREFIX; "
        "default: the state directory",
    )
    interval_steps: Annotated[int, Field(ge=1, le=10_000_000)] = 100

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is not None and "://" in uri and uri.split("://", 1)[0] not in ("file", "s3"):
            raise ValueError("expected a path, file:// or s3://BUCKET/PREFIX")
        return uri


_NEEDS_DURATION = "a deadline or deferrable job needs expectedDuration (e.g. 2h) to be planned"
_DEFER_NEEDS_DEADLINE = "deferrable needs a deadline: how long the job may wait"


class TrainingJobSpec(Spec):
    """A distributed training run on its own Ray cluster, in KubeRay's RayJob vocabulary."""

    entrypoint: str = Field(min_length=1)
    runtime_env: RuntimeEnv = Field(default_factory=RuntimeEnv)
    worker_group_specs: Annotated[list[WorkerGroup], Field(min_length=1, max_length=16)] = Field(
        default_factory=lambda: [WorkerGroup()]
    )
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    max_restarts: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=3, description="Worker-group restarts within one run (a worker died)"
    )
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = Field(
        default=2, description="Resubmissions of the whole job after it failed"
    )
    deadline: Duration | None = Field(
        default=None, description="Time from submission by which the job must have finished"
    )
    deferrable: bool = Field(
        default=False, description="May wait (within the deadline) for cleaner electricity"
    )
    expected_duration: Duration | None = Field(
        default=None,
        description="How long the job trains once running: the work the spot policy and "
        "the carbon plan schedule",
    )
    restart_overhead: Duration = Field(
        default="5m", description="What a start on new capacity costs before training resumes"
    )
    opportunistic: bool = Field(
        default=False,
        description="Runs only on GPUs the serving fleet leaves idle, handing them back on demand",
    )

    @model_validator(mode="after")
    @cel(
        "!(has(self.deadline) || self.deferrable) || has(self.expectedDuration)",
        _NEEDS_DURATION,
        field_path=".expectedDuration",
    )
    def _planned(self) -> TrainingJobSpec:
        if (self.deadline is not None or self.deferrable) and self.expected_duration is None:
            raise ValueError(_NEEDS_DURATION)
        return self

    @model_validator(mode="after")
    @cel("!self.deferrable || has(self.deadline)", _DEFER_NEEDS_DEADLINE, field_path=".deadline")
    def _deferrable(self) -> TrainingJobSpec:
        if self.deferrable and self.deadline is None:
            raise ValueError(_DEFER_NEEDS_DEADLINE)
        return self

    @property
    def workers(self) -> int:
        return sum(g.replicas for g in self.worker_group_specs)


TrainingPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class TrainingJobStatus(Status):
    """Observed state of a TrainingJob: its phase, progress and where the result is."""

    phase: TrainingPhase = "Pending"
    revision: str = ""
    attempt: int = 0
    step: int | None = None
    loss: float | None = None
    checkpoints: int = 0
    last_checkpoint_step: int | None = None
    worker_restarts: int = 0
    submission_id: str = ""
    dashboard_url: str = ""
    output_uri: str = ""
    message: str = ""
    start_time: str = ""
    completion_time: str = ""
    submit_time: str = Field(default="", description="When this revision was first seen")
    trained_seconds: float = Field(default=0.0, description="Time spent training, all runs")
    capacity: str = Field(default="", description="spot, on_demand or wait (spot policy)")
    capacity_reason: str = ""
    planned_start: str = Field(default="", description="The carbon plan's start (deferrable)")
    planned_g_co2: float | None = Field(default=None, description="gCO2 the plan expects")
    at_once_g_co2: float | None = Field(default=None, description="gCO2 starting now would emit")
    lent_gpus: int = Field(default=0, description="Idle serving GPUs held (opportunistic)")
    lent_gpu_seconds: float = 0.0


class TrainingJob(Resource):
    kind: Literal["TrainingJob"] = "TrainingJob"
    spec: TrainingJobSpec
    status: TrainingJobStatus = Field(default_factory=TrainingJobStatus)


VectorMetric = Literal["cosine", "dot", "l2"]


class VectorStorage(Spec):
    """Where a store's vectors live: ``embedded`` (LanceDB files, no server) or ``pgvector``
    (a PostgreSQL server with the pgvector extension, for stores that outgrow one machine)."""

    type: Literal["embedded", "pgvector"] = "embedded"
    url: str | None = Field(
        default=None, description="postgresql://USER@HOST:PORT/DB (pgvector only)"
    )
    size: Quantity = Field(
        default="1Gi", description="The PersistentVolumeClaim's size on Kubernetes (embedded)"
    )

    @model_validator(mode="after")
    @cel("(self.type == 'pgvector') == has(self.url)", "pgvector takes url; embedded takes none")
    def _url_for_pgvector(self) -> VectorStorage:
        if (self.type == "pgvector") != (self.url is not None):
            raise ValueError("pgvector takes url; embedded takes none")
        if self.url is not None and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError("url: expected postgresql://USER@HOST:PORT/DB")
        return self


class VectorStoreSpec(Spec):
    """A vector index beside an embedding model; served as ``/v1/vector_stores/NAME``."""

    embedding_model: Name
    dimensions: Annotated[int, Field(ge=1, le=16000)]
    metric: VectorMetric = "cosine"
    storage: VectorStorage = Field(default_factory=VectorStorage)


class VectorStore(Resource):
    kind: Literal["VectorStore"] = "VectorStore"
    spec: VectorStoreSpec
    status: Status = Field(default_factory=Status)


CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
"""The node label that tells spot from on-demand capacity when a node group names no labels
(Karpenter's well-known label, values ``spot`` and ``on-demand``)."""


class Taint(Spec):
    """A taint on a node group's nodes; pods placed there get the matching toleration."""

    key: Annotated[str, Field(min_length=1, max_length=316)]
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class GPUNodeGroup(Spec):
    """Identical GPU nodes: how many, which GPU, how they are shared and how to reach them."""

    count: Annotated[int, Field(ge=0, le=100000)] = 1
    gpu_model: str
    gpus_per_node: Annotated[int, Field(ge=1, le=16)] = 8
    mig: bool = False
    spot: bool = False
    region: str = ""
    node_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels that select this group's nodes (default: "
        f"{CAPACITY_TYPE_LABEL} = spot or on-demand)",
    )
    taints: list[Taint] = Field(
        default_factory=list, description="Taints on these nodes (e.g. a spot taint)"
    )

    @property
    def selector(self) -> dict[str, str]:
        """The labels a pod must require to land on this group's nodes."""
        capacity = {CAPACITY_TYPE_LABEL: "spot" if self.spot else "on-demand"}
        return dict(self.node_labels) or capacity


class GPUPoolSpec(Spec):
    """A set of GPU nodes that Models and TrainingJobs may be placed on."""

    nodes: list[GPUNodeGroup] = Field(default_factory=list)


class GPUPool(Resource):
    kind: Literal["GPUPool"] = "GPUPool"
    spec: GPUPoolSpec
    status: Status = Field(default_factory=Status)


class BudgetLimits(Spec):
    """Caps on what a namespace may spend in one period; an unset cap is no cap."""

    tokens: Annotated[int | None, Field(ge=0)] = Field(
        default=None, description="Prompt plus generated tokens"
    )
    gpu_seconds: Annotated[float | None, Field(ge=0)] = Field(
        default=None, description="GPU-seconds by fraction (a 3g.40gb slice counts 3/7)"
    )
    joules: Annotated[float | None, Field(ge=0)] = None
    grams_co2: Annotated[float | None, Field(ge=0)] = Field(
        default=None, description="gCO2eq at the configured carbon intensity"
    )


class BudgetSpec(Spec):
    """What the namespace of this Budget may spend per day or per calendar month (UTC)."""

    period: Literal["day", "month"] = "day"
    limits: BudgetLimits


class Budget(Resource):
    """A cap on one namespace's spend; at the cap new work there is refused."""

    kind: Literal["Budget"] = "Budget"
    spec: BudgetSpec
    status: Status = Field(default_factory=Status)
