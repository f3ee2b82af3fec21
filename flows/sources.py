"""The media a job works on, read once from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.repository import load_media
from db.session import transaction
from media_pipeline.enums import MediaStatus, MediaType
from media_pipeline.errors import InvalidMedia
from media_pipeline.storage import media_key


@dataclass(frozen=True)
class MediaSource:
    media_id: uuid.UUID
    alert_id: uuid.UUID
    category: str
    type: MediaType
    is_enhanced: bool
    source_media_id: uuid.UUID | None
    original_key: str  # storage keys (see media_pipeline/object_store.py)
    folder_key: str
    filename: str

    @property
    def short_id(self) -> str:
        return str(self.media_id)[:8]


def read_source(session: Session, media_id: uuid.UUID) -> MediaSource:
    """The media's row as a plain value; a media whose upload is not complete is refused."""
    media = load_media(session, media_id)
    if media.status is MediaStatus.AWAITING_UPLOAD:
        raise InvalidMedia(f"media {media.id} awaits its upload: complete it first")
    return MediaSource(
        media_id=media.id,
        alert_id=media.alert_id,
        category=media.alert.category_code,
        type=media.type,
        is_enhanced=media.is_enhanced,
        source_media_id=media.source_media_id,
        original_key=media.storage_key,
        folder_key=media_key(media.alert_id, media.source_media_id or media.id),
        filename=media.filename,
    )


def load_source(media_id: uuid.UUID) -> MediaSource:
    return transaction(lambda session: read_source(session, media_id))
