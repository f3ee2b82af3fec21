"""One typed settings object, read from environment variables, grouped by area.

Names fixed by the design (``DATABASE_URL``, ``MEDIA_ROOT``, the providers' keys and
URLs, the Vertex AI variables) are read as they are; everything else is
``MEDIA_PIPELINE_<NAME>``. Secrets are ``SecretStr``: they never print.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from media_pipeline.settings.base import PREFIX
from media_pipeline.settings.media import FfmpegSettings, ImageSettings
from media_pipeline.settings.providers import GeminiSettings, OpenAISettings
from media_pipeline.settings.service import (
    ApiSettings,
    NotificationSettings,
    OrchestrationSettings,
)
from media_pipeline.settings.storage import DatabaseSettings, StorageSettings

__all__ = [
    "ApiSettings",
    "DatabaseSettings",
    "FfmpegSettings",
    "GeminiSettings",
    "ImageSettings",
    "NotificationSettings",
    "OpenAISettings",
    "OrchestrationSettings",
    "Settings",
    "StorageSettings",
    "get_settings",
    "settings_fingerprint",
    "settings_table",
]

# Variables that Prefect, boto3 and the providers' SDKs read besides our settings.
FOREIGN_PREFIXES = ("PREFECT_", "AWS_", "OPENAI_", "GOOGLE_", "GEMINI_")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    ffmpeg: FfmpegSettings = Field(default_factory=FfmpegSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        data_dir = self.storage.data_dir.expanduser().resolve()
        media_root = (self.storage.media_root or data_dir / "media").expanduser().resolve()
        results = self.storage.results_dir
        if results is None and not self.storage.storage_url:
            results = media_root / ".prefect-results"
        results = results.expanduser() if results else None
        storage = self.storage.model_copy(
            update={"data_dir": data_dir, "media_root": media_root, "results_dir": results}
        )
        object.__setattr__(self, "storage", storage)
        if not self.database.url:
            url = f"sqlite:///{data_dir / 'media-pipeline.db'}"
            object.__setattr__(self, "database", self.database.model_copy(update={"url": url}))
        return self

    def redact(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``***``."""
        secrets = [
            self.openai.api_key,
            self.gemini.api_key,
            self.notifications.callback_secret,
            self.storage.s3_secret_access_key,
            self.api.upload_secret,
        ]
        for value in [s.get_secret_value() for s in secrets] + self.api.tokens():
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    @property
    def media_root(self) -> Path:
        assert self.storage.media_root is not None  # set by the validator
        return self.storage.media_root


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; ``get_settings.cache_clear()`` re-reads the environment."""
    return Settings()


def settings_fingerprint(settings: Settings, key: bytes, environ: Mapping[str, str]) -> str:
    """A keyed digest (HMAC-SHA256, hex) of every effective setting, secrets included, of
    the variables the libraries read themselves (``FOREIGN_PREFIXES``) and of the
    installation: two processes with the same fingerprint process a media alike. Keyed, so
    that the digest tells nothing about a secret, however short."""

    def reveal(value: object) -> str:
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    foreign = {k: v for k, v in environ.items() if k.startswith(FOREIGN_PREFIXES)}
    effective = {"settings": settings.model_dump(), "environ": foreign, "python": sys.prefix}
    message = json.dumps(effective, sort_keys=True, default=reveal).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README's configuration table."""
    rows = []
    for group in Settings.model_fields.values():
        model = group.annotation
        for name, field in model.model_fields.items():  # type: ignore[union-attr]
            env = field.validation_alias or f"{PREFIX}{name.upper()}"
            default = field.default
            if isinstance(default, SecretStr):
                default = ""
            rows.append(
                (str(env), "" if default is None else str(default), field.description or "")
            )
    return rows
