"""The base of every settings group: ``MEDIA_PIPELINE_<NAME>`` unless a field names its
variable (``DATABASE_URL``, ``MEDIA_ROOT``, the providers' own)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "MEDIA_PIPELINE_"


class Group(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, populate_by_name=True, extra="ignore", frozen=True
    )
