"""Secrets the pipeline makes once and keeps in files readable by their owner only, under
the data dir (the API token, the key of the upload links, the key of the settings'
fingerprints): every process of one machine finds the same ones."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from media_pipeline.settings import Settings


def kept_secret(path: Path, prefix: str = "") -> str:
    """The secret in ``path``, made there (``prefix`` and a random token, readable by its
    owner only) the first time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        value = prefix + secrets.token_urlsafe(32)
        file.write(value + "\n")
    return value


def token_file(settings: Settings) -> Path:
    return settings.storage.data_dir / "api-token"
