"""The few functions that read and write the pipeline's rows. Flows and tasks call these."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session, SessionTransaction

from db.models import (
    Alert,
    DerivativeType,
    Media,
    MediaDerivative,
    MediaErasure,
    MediaStatus,
    MediaType,
    Transcription,
    TranscriptionSource,
)
from media_pipeline.derivatives import Derivative
from media_pipeline.errors import MediaErased, MediaNotFound, PermanentError
from media_pipeline.payloads import JobSummary, MediaSummary
from media_pipeline.storage import relative_key


def ensure_alert(session: Session, alert_id: uuid.UUID, category_code: str) -> Alert:
    """The alert with that id, created when missing; its category must match."""
    category_code = category_code.strip().upper()
    alert = session.get(Alert, alert_id)
    if alert is None:
        alert = Alert(id=alert_id, category_code=category_code)
        session.add(alert)
        session.flush()
    elif alert.category_code != category_code:
        raise PermanentError(
            f"alert {alert_id} has category {alert.category_code}, not {category_code}"
        )
    return alert


def set_alert_category(session: Session, alert_id: uuid.UUID, category_code: str) -> bool:
    """Create the alert or change its category (which decides AI enhancement of the
    media completed afterwards); True when it was created."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        ensure_alert(session, alert_id, category_code)
        return True
    alert.category_code = category_code.strip().upper()
    return False


def create_media(
    session: Session,
    *,
    media_id: uuid.UUID,
    alert_id: uuid.UUID,
    media_type: MediaType,
    filename: str,
    mime_type: str,
    size: int,
    storage_key: str,
    position: int = 0,
    source_media_id: uuid.UUID | None = None,
    status: MediaStatus = MediaStatus.UPLOADED,
) -> Media:
    media = Media(
        id=media_id,
        alert_id=alert_id,
        type=media_type,
        filename=filename,
        mime_type=mime_type,
        size=size,
        storage_key=storage_key,
        position=position,
        is_enhanced=source_media_id is not None,
        source_media_id=source_media_id,
        status=status,
    )
    session.add(media)
    session.flush()
    return media


def lock_media(session: Session, media_id: uuid.UUID) -> None:
    """Take the media row's write lock until the transaction ends.

    Every transaction that changes a media's jobs takes it first, so two runs of one
    media (two tiers finishing together, two submitters) follow one another and each
    recomputes the status from rows the other has committed. An UPDATE, not SELECT ...
    FOR UPDATE, so that SQLite takes its write lock here too. Taken once per transaction:
    the lock lasts until it ends.
    """
    locked = session.info.setdefault(LOCKED_MEDIA, set())
    if media_id not in locked:
        session.execute(update(Media).where(Media.id == media_id).values(status=Media.status))
        locked.add(media_id)


LOCKED_MEDIA = "media rows locked in this transaction"


@event.listens_for(Session, "after_transaction_end")
def _locks_released(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the database transaction ended: so did its locks
        session.info.pop(LOCKED_MEDIA, None)


def mark_uploaded(
    session: Session, media_id: uuid.UUID, media_type: MediaType, mime_type: str
) -> None:
    """An initiated media whose bytes were checked: UPLOADED, with the type its content has.
    Read under the media's lock, so two completes of one media agree."""
    lock_media(session, media_id)
    media = load_media(session, media_id)
    if media.status is MediaStatus.AWAITING_UPLOAD:
        media.status, media.type, media.mime_type = MediaStatus.UPLOADED, media_type, mime_type


def delete_abandoned_uploads(session: Session, initiated_before: datetime) -> list[str]:
    """Media initiated before ``initiated_before`` whose upload never completed: their rows
    are deleted; returns their storage keys (an object may have been stored)."""
    abandoned = session.scalars(
        select(Media).where(
            Media.status == MediaStatus.AWAITING_UPLOAD, Media.created_at < initiated_before
        )
    ).all()
    for media in abandoned:
        session.delete(media)
    session.flush()
    return [media.storage_key for media in abandoned]


def load_media(session: Session, media_id: uuid.UUID) -> Media:
    media = session.get(Media, media_id)
    if media is None:
        erased = session.get(MediaErasure, media_id)
        if erased is not None:
            raise MediaErased(
                f"media {media_id} was erased at {erased.erased_at.isoformat(timespec='seconds')}"
            )
        raise MediaNotFound(f"media {media_id} does not exist")
    return media


def set_placeholder(session: Session, media_id: uuid.UUID, placeholder: str | None) -> None:
    load_media(session, media_id).placeholder = placeholder


def record_derivatives(
    session: Session,
    media_id: uuid.UUID,
    media_root: Path,
    derivatives: Iterable[Derivative],
    job_version: int = 1,
) -> list[MediaDerivative]:
    """One row per (media, type): an existing row is updated, never duplicated."""
    existing = {
        row.type: row
        for row in session.scalars(
            select(MediaDerivative).where(MediaDerivative.media_id == media_id)
        )
    }
    rows = []
    for derivative in derivatives:
        kind = DerivativeType(derivative.kind)
        row = existing.get(kind) or MediaDerivative(media_id=media_id, type=kind)
        row.storage_key = relative_key(media_root, derivative.path)
        row.mime_type = derivative.mime_type
        row.width = derivative.width
        row.height = derivative.height
        row.bytes = derivative.bytes
        row.duration = derivative.duration
        row.extra = {
            key: relative_key(media_root, value) if isinstance(value, Path) else value
            for key, value in derivative.extra.items()
        }
        row.job_version = job_version
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def media_summary(session: Session, media_id: uuid.UUID) -> MediaSummary:
    """The media's status and every job's state and outputs."""
    media = load_media(session, media_id)
    return MediaSummary(
        media_id=media.id,
        alert_id=media.alert_id,
        type=media.type,
        status=media.status,
        status_message=media.status_message,
        filename=media.filename,
        placeholder=media.placeholder,
        jobs=[
            JobSummary(
                job=job.job,
                state=job.state,
                attempts=job.attempts,
                error=job.error,
                outputs=job.outputs.get("derivatives", []),
                estimated_cost=job.estimated_cost,
                flow_run_id=job.flow_run_id,
            )
            for job in media.jobs
        ],
    )


def transcription_of_run(
    session: Session, media_id: uuid.UUID, flow_run_id: str | None
) -> Transcription | None:
    """The automatic transcription a flow run already made (a re-run must not add one)."""
    if not flow_run_id:
        return None
    return session.scalar(
        select(Transcription).where(
            Transcription.media_id == media_id,
            Transcription.flow_run_id == flow_run_id,
            Transcription.source == TranscriptionSource.AUTO,
        )
    )


def add_transcription(
    session: Session,
    media_id: uuid.UUID,
    *,
    text: str,
    language: str | None,
    duration: float | None,
    segments: list[dict[str, Any]],
    model: str | None,
    flow_run_id: str | None,
    source: TranscriptionSource = TranscriptionSource.AUTO,
    job_version: int = 1,
) -> Transcription:
    """The next version, active; the previously active one is deactivated with it.

    A flow run adds one version at most: a second call of the same run (two processes of
    one run, after a false alarm) returns the first one's row.
    """
    lock_media(session, media_id)
    if source is TranscriptionSource.AUTO and (
        existing := transcription_of_run(session, media_id, flow_run_id)
    ):
        return existing
    latest = session.scalar(
        select(func.max(Transcription.version)).where(Transcription.media_id == media_id)
    )
    session.execute(
        update(Transcription)
        .where(Transcription.media_id == media_id, Transcription.is_active.is_(True))
        .values(is_active=False)
    )
    row = Transcription(
        media_id=media_id,
        version=(latest or 0) + 1,
        source=source,
        is_active=True,
        text=text,
        language=language,
        duration=duration,
        segments=segments,
        model=model,
        flow_run_id=flow_run_id,
        job_version=job_version,
    )
    session.add(row)
    session.flush()
    return row


def upsert_enhanced_media(
    session: Session, source_media_id: uuid.UUID, storage_key: str, size: int
) -> Media:
    """The source's one enhanced media: created once, then replaced in place on re-runs."""
    source = load_media(session, source_media_id)
    media = session.scalar(select(Media).where(Media.source_media_id == source_media_id))
    if media is None:
        return create_media(
            session,
            media_id=uuid.uuid4(),
            alert_id=source.alert_id,
            media_type=MediaType.IMAGE,
            filename=f"{Path(source.filename).stem}-enhanced.jpg"[:255],
            mime_type="image/jpeg",
            size=size,
            storage_key=storage_key,
            position=source.position,
            source_media_id=source_media_id,
        )
    media.storage_key = storage_key
    media.size = size
    session.flush()
    return media


def active_transcription(session: Session, media_id: uuid.UUID) -> Transcription | None:
    return session.scalar(
        select(Transcription).where(
            Transcription.media_id == media_id,
            Transcription.is_active.is_(True),
        )
    )
