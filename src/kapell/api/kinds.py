"""The kinds beside ``Model``: training jobs, prompts, vector stores and GPU pools.

They start small: enough shared shape for the controllers that will grow around them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kapell.api.meta import Name, Resource, Spec, Status
from kapell.api.model import Resources
from kapell.api.units import Duration


class TrainingJobSpec(Spec):
    """A distributed training run, gang-scheduled on Ray."""

    entrypoint: str
    workers: Annotated[int, Field(ge=1, le=4096)] = 1
    resources: Resources = Field(default_factory=Resources)
    spot: bool = False
    checkpoint_uri: str | None = None
    deadline: Duration | None = None
    deferrable: bool = False


class TrainingJob(Resource):
    kind: Literal["TrainingJob"] = "TrainingJob"
    spec: TrainingJobSpec
    status: Status = Field(default_factory=Status)


class PromptSpec(Spec):
    """A versioned prompt template bound to a model."""

    model: Name
    template: str
    variables: list[str] = Field(default_factory=list)
    version: Annotated[int, Field(ge=1)] = 1


class Prompt(Resource):
    kind: Literal["Prompt"] = "Prompt"
    spec: PromptSpec
    status: Status = Field(default_factory=Status)


class VectorStoreSpec(Spec):
    """A vector index beside an embedding model."""

    embedding_model: Name
    dimensions: Annotated[int, Field(ge=1, le=65536)]
    metric: Literal["cosine", "dot", "l2"] = "cosine"


class VectorStore(Resource):
    kind: Literal["VectorStore"] = "VectorStore"
    spec: VectorStoreSpec
    status: Status = Field(default_factory=Status)


class GPUNodeGroup(Spec):
    """Identical GPU nodes: how many, which GPU, and how they are shared."""

    count: Annotated[int, Field(ge=0, le=100000)] = 1
    gpu_model: str
    gpus_per_node: Annotated[int, Field(ge=1, le=16)] = 8
    mig: bool = False
    spot: bool = False
    region: str = ""


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
