"""The resources users write, how they are loaded and validated, and their CRD schemas."""

from __future__ import annotations

from kapell.api.errors import KapellError, Problem, SpecError
from kapell.api.kinds import Budget, GPUPool, TrainingJob, VectorStore
from kapell.api.meta import API_VERSION, Condition, ObjectMeta, Resource
from kapell.api.model import Model
from kapell.api.prompt import Prompt
from kapell.api.tenant import Tenant

KINDS: dict[str, type[Resource]] = {
    cls.__name__: cls for cls in (Model, TrainingJob, Prompt, VectorStore, GPUPool, Tenant, Budget)
}

__all__ = [
    "API_VERSION",
    "KINDS",
    "Budget",
    "Condition",
    "GPUPool",
    "KapellError",
    "Model",
    "ObjectMeta",
    "Problem",
    "Prompt",
    "Resource",
    "SpecError",
    "Tenant",
    "TrainingJob",
    "VectorStore",
]
