"""The ``Prompt`` kind: a versioned template bound to a Model, rolled out like code.

A version is immutable once applied: ``PromptVersion`` is what a version number stands for
(model, template, variables, role), and ``version_conflict`` is the one rule that refuses a
changed version under a number already used. Which versions serve how much traffic is the
rollout controller's business; it writes that into ``PromptStatus``.

Templates name their variables as ``{{name}}`` (the syntax of OpenAI's stored prompts);
``template_variables`` finds them so that a spec whose ``variables`` list disagrees with its
template is refused on load, not on the first request.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from kapell.api.cel import cel
from kapell.api.meta import Name, Resource, Spec, Status
from kapell.api.units import Duration

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""``{{ name }}``: a variable's place in a template (spaces inside the braces allowed)."""


def template_variables(template: str) -> list[str]:
    """The variables a template uses, each once, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


class PromptRollout(Spec):
    """How a new version takes over traffic, and when it is rolled back.

    The canary gets ``steps[i]`` percent of users (sticky by user) for at least
    ``stepInterval`` and ``minRequests`` requests before the next step; reaching the last
    step (100) promotes it. A sequential test (``policy.rollout``) rolls it back as soon as it
    is worse than the stable version by ``worseBy`` times the rate of errors, of responses
    slower than ``latencyThreshold``, or of negative feedback.
    """

    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1, max_length=20)
    ] = Field(default_factory=lambda: [5, 25, 50, 100])
    step_interval: Duration = "60s"
    min_requests: Annotated[int, Field(ge=0, le=10_000_000)] = 20
    worse_by: Annotated[float, Field(gt=1.0, le=100.0)] = Field(
        default=2.0, description="The rate ratio (canary / stable) the test is built to detect"
    )
    alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        default=0.05, description="Chance of rolling back a version that is no worse"
    )
    beta: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        default=0.2, description="Chance of the test not rejecting a version worseBy worse"
    )
    latency_threshold: Duration | None = Field(
        default=None, description="A response slower than this counts against its version"
    )

    @model_validator(mode="after")
    def _steps_increase(self) -> PromptRollout:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must increase, got {self.steps}")
        return self

    @model_validator(mode="after")
    @cel("self.steps[size(self.steps) - 1] == 100", "the last step must be 100 (the promotion)",
         field_path=".steps")  # fmt: skip
    def _last_step_is_100(self) -> PromptRollout:
        if self.steps[-1] != 100:
            raise ValueError(f"the last step must be 100 (the promotion), got {self.steps[-1]}")
        return self


Role = Literal["system", "developer", "user"]


class PromptRetrieval(Spec):
    """Retrieval-augmented generation for a Prompt: before rendering, the gateway searches
    ``vectorStore`` for the request's ``queryVariable`` and puts the ``topK`` chunks found,
    best first, into ``contextVariable``."""

    vector_store: Name
    top_k: Annotated[int, Field(ge=1, le=50)] = 4
    query_variable: str = Field(default="question", min_length=1)
    context_variable: str = Field(default="context", min_length=1)


class PromptSpec(Spec):
    """A prompt template and its version; applying a new version starts its rollout."""

    model: Name
    template: str = Field(min_length=1)
    variables: list[str] | None = Field(
        default=None, description="The template's variables; default: those it uses"
    )
    version: Annotated[int, Field(ge=1)] = 1
    role: Role = Field(default="system", description="The role of the rendered message")
    rollout: PromptRollout = Field(default_factory=PromptRollout)
    retrieval: PromptRetrieval | None = Field(
        default=None, description="Fill a variable with chunks found in a VectorStore"
    )

    @model_validator(mode="after")
    def _retrieval_fills_a_template_variable(self) -> PromptSpec:
        """The query is a variable callers send, the context one the gateway fills: both
        must be in the template (a version's variables are exactly the template's)."""
        if self.retrieval is None:
            return self
        used = template_variables(self.template)
        for field, name in (
            ("queryVariable", self.retrieval.query_variable),
            ("contextVariable", self.retrieval.context_variable),
        ):
            if name not in used:
                raise ValueError(
                    f"retrieval.{field} '{name}' must appear in the template as {{{{{name}}}}}"
                )
        return self

    @model_validator(mode="after")
    def _variables_match_template(self) -> PromptSpec:
        if self.variables is None:
            return self
        used, declared = template_variables(self.template), self.variables
        unused = [v for v in declared if v not in used]
        undeclared = [v for v in used if v not in declared]
        if unused or undeclared:
            parts = [f"declared but not in the template: {', '.join(unused)}"] if unused else []
            parts += [f"used but not declared: {', '.join(undeclared)}"] if undeclared else []
            raise ValueError("variables do not match the template ({})".format("; ".join(parts)))
        return self


class PromptVersion(Spec):
    """What one version number of a Prompt stands for, for good once applied."""

    version: Annotated[int, Field(ge=1)]
    model: Name
    template: str
    variables: list[str]
    role: Role = "system"
    retrieval: PromptRetrieval | None = None

    @classmethod
    def of(cls, spec: PromptSpec) -> PromptVersion:
        variables = spec.variables or template_variables(spec.template)
        return cls(
            version=spec.version,
            model=spec.model,
            template=spec.template,
            variables=variables,
            role=spec.role,
            retrieval=spec.retrieval,
        )


def version_conflict(name: str, stored: PromptVersion, applied: PromptVersion) -> str | None:
    """Why ``applied`` may not replace ``stored`` (same number), or None if they are equal."""
    if stored == applied:
        return None
    fields = ("model", "template", "variables", "role", "retrieval")
    changed = [f for f in fields if getattr(stored, f) != getattr(applied, f)]
    return (
        f"prompt '{name}' version {stored.version} is already applied with another "
        f"{' and '.join(changed)}; a version is immutable: apply the change as a new version "
        f"(spec.version: {stored.version + 1} or higher)"
    )


VersionState = Literal["Stable", "Canary", "RolledBack", "Retired"]
PromptPhase = Literal["Stable", "Progressing", "RolledBack"]


class VersionWeight(Spec):
    """One version's share of the traffic that does not ask for a version."""

    version: int
    weight: Annotated[int, Field(ge=0, le=100)]
    state: VersionState


class VersionCounts(Spec):
    """What the gateway counted for one version: requests, and how many were bad.

    ``slow`` counts responses slower than the rollout's latency threshold; ``negative``
    counts feedback scores below 0.5 among ``feedback``."""

    requests: Annotated[int, Field(ge=0)] = 0
    errors: Annotated[int, Field(ge=0)] = 0
    slow: Annotated[int, Field(ge=0)] = 0
    feedback: Annotated[int, Field(ge=0)] = 0
    negative: Annotated[int, Field(ge=0)] = 0


class RolloutEvidence(Spec):
    """The sequential test's state: log-likelihood ratio per signal, its bounds, the counts
    of both versions since the canary started, and those not yet tested (``pending``: an
    interval in which one version had no exposure says nothing until the other has some)."""

    llr: dict[str, float] = Field(default_factory=dict)
    lower: float = 0.0
    upper: float = 0.0
    stable: VersionCounts = Field(default_factory=VersionCounts)
    canary: VersionCounts = Field(default_factory=VersionCounts)
    pending_stable: VersionCounts = Field(default_factory=VersionCounts)
    pending_canary: VersionCounts = Field(default_factory=VersionCounts)


class PromptStatus(Status):
    """Which versions serve, by what weight, and the rollout's last decision and evidence.

    ``seen`` holds each version's gateway counters at the last reconcile, so the next one
    feeds the test only what is new.
    """

    phase: PromptPhase = "Stable"
    stable_version: int = 0
    canary_version: int | None = None
    step: int = 0
    step_started_s: float = 0.0
    step_requests: int = 0
    versions: list[VersionWeight] = Field(default_factory=list)
    rolled_back: list[int] = Field(default_factory=list)
    evidence: RolloutEvidence | None = None
    seen: dict[str, VersionCounts] = Field(default_factory=dict)
    message: str = ""

    def weights(self) -> dict[int, int]:
        return {v.version: v.weight for v in self.versions if v.weight > 0}


class Prompt(Resource):
    kind: Literal["Prompt"] = "Prompt"
    spec: PromptSpec
    status: PromptStatus = Field(default_factory=PromptStatus)
