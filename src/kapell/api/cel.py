"""CEL rules for the apiserver, declared on the pydantic validators that they mirror.

A cross-field check (``minReplicas <= maxReplicas``, one GPU kind at a time) cannot be said in
OpenAPI, so pydantic says it in Python and Kubernetes needs it again in CEL, as an
``x-kubernetes-validations`` entry of the object's schema. Both are written in one place::

    @model_validator(mode="after")
    @cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas",
         field_path=".minReplicas")
    def _ordered(self) -> ScalingSpec: ...

``Spec`` (``kapell.api.meta``) adds every rule declared on a class's validators to that class's
JSON schema, and the CRD generator keeps it. Rules see the object after the apiserver applied
the schema's defaults and pruned ``null`` values, so a field with a default is always present
and an optional field without one is tested with ``has()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__kapell_cel_rules__"


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry."""

    rule: str
    message: str
    field_path: str | None = None

    def manifest(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        return out


def cel(rule: str, message: str, *, field_path: str | None = None) -> Callable[[F], F]:
    """Declare the CEL ``rule`` that checks on the apiserver what the decorated validator checks.

    Put it under ``@model_validator``/``@field_validator`` (and ``@classmethod``), on the plain
    function. ``message`` is what the apiserver says when the rule is false; ``field_path``
    (e.g. ``".minReplicas"``) names the field the error points at, else the object itself.
    There is no ``messageExpression``: kube-apiserver 1.36 refused one that put the values in
    the message (``string(int)`` concatenation) as over 100 times its cost budget.
    """

    def mark(func: F) -> F:
        new = CelRule(rule, message, field_path)
        rules: list[CelRule] = [*getattr(func, _ATTR, ()), new]
        setattr(func, _ATTR, tuple(rules))
        return func

    return mark


def rules_of_validator(func: Any) -> tuple[CelRule, ...]:
    """The rules declared on one validator function (empty when it has none)."""
    func = getattr(func, "__func__", func)  # a classmethod's function
    return tuple(getattr(func, _ATTR, ()))


def rules_of(model: type[Any]) -> list[CelRule]:
    """Every rule declared on the validators of a pydantic model class, in declaration order."""
    decorators = getattr(model, "__pydantic_decorators__", None)
    if decorators is None:
        return []
    found: list[CelRule] = []
    for group in (decorators.field_validators, decorators.model_validators):
        for decorator in group.values():
            found.extend(rules_of_validator(decorator.func))
    return found
