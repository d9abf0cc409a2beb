"""Prompts at the gateway: which version a request gets, its rendering, and what each version did.

``PromptTable`` holds every applied version of every Prompt with the weights the rollout
controller last wrote, both handed over by the composition root (``update``). A request that
names a version gets it; one that does not is split by weight, sticky per user: the user's
hash picks a bucket in [0, 100), and the canary owns the lowest buckets, so a user on the
canary stays on it as its weight grows. Per version the table counts requests, errors, slow
responses and feedback, which the controller reads (``counts``) and ``/metrics`` shows.

``render`` is a plain function of the version and a variables dict, so retrieval (or any
other source) can add variables such as ``context`` before it is called.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from kapell.api.prompt import PLACEHOLDER, Prompt, PromptVersion, VersionCounts
from kapell.api.units import parse_duration
from kapell.gateway.errors import GatewayError
from kapell.observe.prompt_metrics import PromptMetrics

RESPONSE_IDS_KEPT = 100_000
"""Recent response ids remembered for feedback by response id (oldest forgotten first)."""

NEGATIVE_BELOW = 0.5
"""A feedback score below this (scores are 0..1) counts against its version."""

NOT_ERRORS = frozenset({401, 403, 408, 413, 429, 499})
"""Statuses that say something about the caller, not the version: never counted as errors."""


def _bad(message: str, status: int = 400, code: str = "invalid_prompt") -> GatewayError:
    return GatewayError(status, message, code=code, param="prompt")


@dataclass(frozen=True)
class PromptRef:
    """The ``prompt`` object of a request: ``{"id", "version"?, "variables"?}``."""

    name: str
    version: int | None
    variables: dict[str, Any]

    @classmethod
    def parse(cls, value: object) -> PromptRef:
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise _bad("'prompt' must be an object with a string 'id' (the Prompt's name)")
        unknown = sorted(set(value) - {"id", "version", "variables"})
        if unknown:
            raise _bad(f"'prompt' has unknown field(s): {', '.join(unknown)}")
        version = value.get("version")
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise _bad(f"'prompt.version' must be a version number, got {version!r}")
        variables = value.get("variables")
        variables = {} if variables is None else variables
        if not isinstance(variables, dict):
            raise _bad("'prompt.variables' must be an object of variable names to values")
        return cls(value["id"], version, variables)


def _text(name: str, value: object) -> str:
    """A variable's value as text: a string, a number, or an ``input_text`` part."""
    if isinstance(value, dict) and value.get("type") == "input_text":
        value = value.get("text")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _bad(f"prompt variable '{name}' must be a string, a number or an input_text part")


def render(version: PromptVersion, variables: dict[str, Any]) -> str:
    """The version's template with ``variables`` filled in; a 400 naming every variable
    missing or not in the template."""
    missing = [v for v in version.variables if v not in variables]
    unknown = sorted(set(variables) - set(version.variables))
    if missing or unknown:
        parts = [f"missing: {', '.join(missing)}"] if missing else []
        parts += [f"unknown: {', '.join(unknown)}"] if unknown else []
        raise _bad(
            f"prompt version {version.version} takes variables "
            f"[{', '.join(version.variables)}]; {'; '.join(parts)}",
            code="bad_prompt_variables",
        )
    texts = {name: _text(name, value) for name, value in variables.items()}
    return PLACEHOLDER.sub(lambda m: texts[m.group(1)], version.template)


def sticky_bucket(prompt: str, user: str | None) -> float:
    """The user's place in [0, 100) for this prompt (random for a request with no user)."""
    if user is None:
        return random.uniform(0.0, 100.0)
    digest = hashlib.blake2b(f"{prompt}\0{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) % 10_000 / 100


Tally = Counter[str]
"""A version's counts by ``VersionCounts`` field name (mutable, unlike ``VersionCounts``)."""


@dataclass
class _Served:
    """One Prompt as the gateway serves it."""

    prompt: Prompt
    versions: dict[int, PromptVersion]
    split: list[tuple[int, int]]
    """(version, weight), canary first; empty until the controller wrote weights."""
    slow_s: float | None
    tallies: dict[int, Tally] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """The version a request got, rendered."""

    key: str
    name: str
    version: PromptVersion
    text: str
    slow_s: float | None
    variables: dict[str, Any] = field(default_factory=dict)
    """What the caller sent (drift and traces key on the prompt; the text is rendered)."""

    def observed(self) -> dict[str, Any]:
        """The ``prompt`` object as drift detection and traces read it: the caller's, with
        the version the split chose."""
        return {"id": self.name, "version": str(self.version.version), "variables": self.variables}


class PromptTable:
    """The Prompts the gateway serves, their split, and per-version counts."""

    def __init__(self, metrics: PromptMetrics) -> None:
        self.metrics = metrics
        self._by_name: dict[str, _Served] = {}
        self._responses: OrderedDict[str, tuple[str, int]] = OrderedDict()
        metrics.watch_weights(self._weights)

    def update(self, prompts: Iterable[tuple[Prompt, list[PromptVersion]]]) -> None:
        """Serve these Prompts (all of them: others are dropped), keeping their counts."""
        served = {}
        for prompt, versions in prompts:
            name = prompt.metadata.name
            old = self._by_name.get(name)
            weights = sorted(
                (v for v in prompt.status.versions if v.weight > 0),
                key=lambda v: v.state != "Canary",
            )
            threshold = prompt.spec.rollout.latency_threshold
            served[name] = _Served(
                prompt,
                {v.version: v for v in versions},
                [(v.version, v.weight) for v in weights],
                None if threshold is None else parse_duration(threshold),
                old.tallies if old is not None and old.prompt.key == prompt.key else {},
            )
        self._by_name = served

    def select(self, ref: PromptRef, user: str | None) -> Selection:
        """The version ``ref`` asks for (or the user's, by weight), rendered; 404 for an
        unknown prompt or version, 400 for variables that do not fit it."""
        served = self._by_name.get(ref.name)
        if served is None:
            raise _bad(f"prompt '{ref.name}' does not exist", 404, "prompt_not_found")
        number = ref.version if ref.version is not None else self._split(served, user)
        version = served.versions.get(number)
        if version is None:
            known = ", ".join(map(str, sorted(served.versions)))
            raise _bad(
                f"prompt '{ref.name}' has no version {number} (versions: {known})",
                404,
                "prompt_version_not_found",
            )
        chosen = Selection(served.prompt.key, ref.name, version, "", served.slow_s, ref.variables)
        if version.retrieval is not None:
            return chosen  # rendered once its context is retrieved (``rendered``)
        return self.rendered(chosen, ref.variables)

    def rendered(self, selection: Selection, variables: dict[str, Any]) -> Selection:
        """``selection`` with its version's template filled; a 400 counted for the version."""
        try:
            text = render(selection.version, variables)
        except GatewayError:
            self.record(selection.key, selection.name, selection.version.version, 400, 0.0, 0, 0)
            raise
        return replace(selection, text=text)

    def _split(self, served: _Served, user: str | None) -> int:
        if not served.split:
            return served.prompt.spec.version
        bucket = sticky_bucket(served.prompt.metadata.name, user)
        for version, weight in served.split:
            bucket -= weight
            if bucket < 0:
                return version
        return served.split[-1][0]

    def _tally(self, name: str, version: int) -> Tally | None:
        served = self._by_name.get(name)
        if served is None:
            return None
        return served.tallies.setdefault(version, Counter())

    def record(
        self,
        key: str,
        name: str,
        version: int,
        status: int,
        latency_s: float,
        prompt_tokens: int,
        generated_tokens: int,
        slow_s: float | None = None,
    ) -> None:
        """Count one answered request to ``version`` of the prompt ``name``."""
        tally = self._tally(name, version)
        if tally is None or self._by_name[name].prompt.key != key:
            return  # deleted (or replaced) while the request ran
        error = status >= 400 and status not in NOT_ERRORS
        tally["requests"] += 1
        tally["errors"] += error
        tally["slow"] += slow_s is not None and latency_s > slow_s
        self.metrics.request(name, version, status, error, latency_s, prompt_tokens,
                             generated_tokens)  # fmt: skip

    def remember(self, response_id: str, name: str, version: int) -> None:
        """Which prompt version produced ``response_id`` (for feedback that names it)."""
        self._responses[response_id] = (name, version)
        if len(self._responses) > RESPONSE_IDS_KEPT:
            self._responses.popitem(last=False)

    def feedback(self, name: str, body: dict[str, Any], may_use: Callable[[str], bool]) -> int:
        """Count a feedback score for a version of ``name``; returns the version. The body
        names the version, or a response the gateway served with this prompt. A caller that
        ``may_use`` no model of the prompt hears that it does not exist (as for models)."""
        served = self._by_name.get(name)
        if served is None or not any(may_use(v.model) for v in served.versions.values()):
            raise _bad(f"prompt '{name}' does not exist", 404, "prompt_not_found")
        score = body.get("score")
        if not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 1:
            raise GatewayError(400, "'score' must be a number from 0 (bad) to 1 (good)",
                               param="score")  # fmt: skip
        version = body.get("version")
        response_id = body.get("response_id")
        if response_id is not None:
            found = self._responses.get(str(response_id))
            if found is None or found[0] != name:
                raise GatewayError(
                    404,
                    f"response '{response_id}' is not a recent response of prompt '{name}'",
                    code="response_not_found",
                    param="response_id",
                )
            version = found[1]
        if not isinstance(version, int) or version not in served.versions:
            known = ", ".join(map(str, sorted(served.versions)))
            raise GatewayError(
                400 if version is None else 404,
                f"feedback needs 'response_id' or 'version' (versions of '{name}': {known})",
                param="version",
            )
        tally = served.tallies.setdefault(version, Counter())
        tally["feedback"] += 1
        tally["negative"] += score < NEGATIVE_BELOW
        self.metrics.feedback(name, version, score < NEGATIVE_BELOW)
        return version

    def counts(self, key: str) -> dict[int, VersionCounts]:
        """Per version of the Prompt ``key``: what was counted since this gateway started."""
        for served in self._by_name.values():
            if served.prompt.key == key:
                return {v: VersionCounts(**t) for v, t in served.tallies.items()}
        return {}

    def _weights(self) -> Iterator[tuple[str, int, int]]:
        for name, served in self._by_name.items():
            for version, weight in served.split:
                yield name, version, weight
