"""What every body and answer of the HTTP API is: a pydantic model, camelCase by alias as
the seed's API speaks, so that the OpenAPI document shows its schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


class Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Body(Camel):
    """A request body: nothing it does not declare."""

    model_config = ConfigDict(extra="forbid")


class Open(Camel):
    """An answer that may carry details beyond its declared fields (a derivative's
    ``samplesPerPixel``): camelCase too."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _camel_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {to_camel(k) if "_" in k else k: v for k, v in value.items()}
        return value
