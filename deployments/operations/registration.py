"""Registering a local file: detect its type, store the original, create its rows."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from db.models import Media
from db.repository import create_media, ensure_alert
from db.session import session_scope
from media_pipeline.detect import detect_media
from media_pipeline.object_store import get_store
from media_pipeline.storage import media_key, parse_uuid


def register_media(
    source: Path,
    alert_id: uuid.UUID | str | None = None,
    category: str = "AUTRE",
    *,
    position: int = 0,
) -> Media:
    """Create the media row for ``source`` (type detected from content) and store the file.

    The alert is created when it does not exist. Returns the new (detached) row.
    """
    alert_uuid = parse_uuid(alert_id, "alert id") if alert_id is not None else uuid.uuid4()
    detected = detect_media(source)
    media_id = uuid.uuid4()
    key = f"{media_key(alert_uuid, media_id)}/original.{detected.extension}"
    store = get_store()
    store.put_file(key, source, detected.mime_type)
    try:
        with session_scope() as session:
            ensure_alert(session, alert_uuid, category)
            return create_media(
                session,
                media_id=media_id,
                alert_id=alert_uuid,
                media_type=detected.type,
                filename=source.name[:255],
                mime_type=detected.mime_type,
                size=source.stat().st_size,
                storage_key=key,
                position=position,
            )
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete(key)
        raise
