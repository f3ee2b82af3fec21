"""The media a job works on, read once from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from db.repository import load_media
from db.session import transaction
from media_pipeline.enums import MediaType
from media_pipeline.errors import InvalidMedia
from media_pipeline.settings import get_settings
from media_pipeline.storage import media_dir


@dataclass(frozen=True)
class MediaSource:
    media_id: uuid.UUID
    alert_id: uuid.UUID
    category: str
    type: MediaType
    is_enhanced: bool
    source_media_id: uuid.UUID | None
    original: Path
    folder: Path
    filename: str

    @property
    def short_id(self) -> str:
        return str(self.media_id)[:8]


def load_source(media_id: object) -> MediaSource:
    """The media's row as a plain value, with the original's path checked to exist."""
    root = get_settings().media_root

    def read(session: Session) -> MediaSource:
        media = load_media(session, media_id)
        return MediaSource(
            media_id=media.id,
            alert_id=media.alert_id,
            category=media.alert.category_code,
            type=media.type,
            is_enhanced=media.is_enhanced,
            source_media_id=media.source_media_id,
            original=root / media.storage_key,
            folder=media_dir(root, media.alert_id, media.source_media_id or media.id),
            filename=media.filename,
        )

    source = transaction(read)
    if not source.original.is_file():
        key = source.original.relative_to(root).as_posix()
        raise InvalidMedia(f"media {media_id}: original file {key} is missing")
    return source
