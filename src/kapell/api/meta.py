"""Metadata, status conditions and the resource envelope shared by every kind.

Field names are camelCase on the wire (YAML, JSON, CRDs) and snake_case in Python.
Unknown fields are rejected so that a typo is reported, not silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from kapell.api.cel import rules_of

API_GROUP = "kapell.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)]
"""A DNS-1123 label: lower-case letters, digits and '-', starting and ending alphanumeric."""


class Spec(BaseModel):
    """Base of every user-written object: camelCase aliases, unknown fields forbidden."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The class's schema plus the CEL rules declared on its validators (``api.cel``)."""
        schema = handler(core_schema)
        rules = rules_of(cls)
        if rules:
            target: dict[str, Any] = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [r.manifest() for r in rules]
        return schema


class ObjectMeta(Spec):
    """The identity of a resource, as in Kubernetes."""

    name: Name
    namespace: Name = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(Spec):
    """A Kubernetes-style status condition (``Ready``, ``Progressing``, ``Degraded``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


class Status(Spec):
    """Observed state, written by controllers and never by users."""

    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)


class Resource(Spec):
    """The envelope of every kind: apiVersion, kind, metadata, spec, status."""

    api_version: Literal["kapell.dev/v1alpha1"] = "kapell.dev/v1alpha1"
    kind: str
    metadata: ObjectMeta

    @property
    def key(self) -> str:
        """``Kind/namespace/name``: unique across kinds within one store."""
        return f"{self.kind}/{self.metadata.namespace}/{self.metadata.name}"
