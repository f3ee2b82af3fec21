"""Processing a local file in-process: what ``media-pipeline process`` and ``demo`` run."""

from __future__ import annotations

import uuid
from pathlib import Path

from db.migrate import upgrade
from db.repository import media_summary
from db.session import transaction
from deployments.local.server import prefect_api
from deployments.operations.registration import register_media
from media_pipeline.payloads import MediaSummary


def process_file(
    file: Path, alert_id: uuid.UUID | str | None = None, category: str = "AUTRE"
) -> MediaSummary:
    """Register ``file``, run the per-media flow on it, and return the media's summary.

    The run sends heartbeats as runs under a worker do: if this command dies, the
    reconciler sees the run fall silent and ends its jobs FAILED.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from deployments.operations.reconciler import FLOW_HEARTBEAT_SECONDS
    from deployments.prefect_private import end_runs_without_waiting_for_heartbeats
    from flows.media import process_media  # imports Prefect: only when needed

    upgrade()
    media = register_media(file, alert_id, category)
    heartbeats = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: FLOW_HEARTBEAT_SECONDS}
    end_runs_without_waiting_for_heartbeats()
    with prefect_api(), temporary_settings(updates=heartbeats):
        process_media(media.id, return_state=True)
    return transaction(lambda session: media_summary(session, media.id))
