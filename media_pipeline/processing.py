"""Processing a local file in-process: what ``media-pipeline process`` and ``demo`` run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from db.migrate import upgrade
from db.repository import media_summary
from db.session import session_scope
from media_pipeline.registration import register_media


def process_file(
    file: Path, alert_id: str | None = None, category: str = "AUTRE"
) -> dict[str, Any]:
    """Register ``file``, run the per-media flow on it, and return the media's summary."""
    from flows.media import process_media  # imports Prefect: only when needed

    upgrade()
    media = register_media(file, alert_id, category)
    process_media(str(media.id), return_state=True)
    with session_scope() as session:
        return media_summary(session, media.id)
