"""Processing a local file in-process: what ``media-pipeline process`` and ``demo`` run."""

from __future__ import annotations

from pathlib import Path

from db.migrate import upgrade
from db.repository import media_summary
from db.session import transaction
from deployments.local_server import prefect_api
from deployments.registration import register_media
from media_pipeline.payloads import MediaSummary


def process_file(
    file: Path, alert_id: str | None = None, category: str = "AUTRE"
) -> MediaSummary:
    """Register ``file``, run the per-media flow on it, and return the media's summary."""
    from flows.media import process_media  # imports Prefect: only when needed

    upgrade()
    media = register_media(file, alert_id, category)
    with prefect_api():
        process_media(str(media.id), return_state=True)
    return transaction(lambda session: media_summary(session, media.id))
