"""What a job's task layer needs to know about its media, read once from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db.models import MediaType
from db.repository import load_media, record_derivatives
from db.session import transaction
from media_pipeline.derivatives import Derivative
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

    @property
    def short_id(self) -> str:
        return str(self.media_id)[:8]


@dataclass
class JobOutput:
    """What a job hands back to the flow: rows written, cost, or why it was skipped.

    ``follow_up_media`` are media the job created that need processing of their own
    (an enhanced portrait gets its thumbnails).
    """

    outputs: list[dict[str, Any]] = field(default_factory=list)
    estimated_cost: float | None = None
    skipped_reason: str | None = None
    follow_up_media: list[str] = field(default_factory=list)


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
        )

    source = transaction(read)
    if not source.original.is_file():
        key = source.original.relative_to(root).as_posix()
        raise InvalidMedia(f"media {media_id}: original file {key} is missing")
    return source


def save_derivatives(media_id: uuid.UUID, derivatives: list[Derivative]) -> JobOutput:
    """Record the derivative rows and describe them for the job summary."""
    root = get_settings().media_root

    def record(session: Session) -> list[dict[str, Any]]:
        return [
            {
                "type": row.type.value,
                "path": row.storage_key,
                "mime_type": row.mime_type,
                "width": row.width,
                "height": row.height,
                "bytes": row.bytes,
                "duration": row.duration,
                **row.extra,
            }
            for row in record_derivatives(session, media_id, root, derivatives)
        ]

    return JobOutput(outputs=transaction(record))
