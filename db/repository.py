"""The few functions that read and write the pipeline's rows. Flows and tasks call these."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.models import (
    Alert,
    DerivativeType,
    JobState,
    Media,
    MediaDerivative,
    MediaStatus,
    MediaType,
    ProcessingJob,
    ProviderCall,
    Transcription,
    TranscriptionSource,
    utcnow,
)
from media_pipeline.derivatives import Derivative
from media_pipeline.errors import MediaNotFound, PermanentError
from media_pipeline.payloads import JobSummary, MediaSummary
from media_pipeline.storage import parse_uuid, relative_key


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
        status=MediaStatus.UPLOADED,
    )
    session.add(media)
    session.flush()
    return media


def load_media(session: Session, media_id: object) -> Media:
    media = session.get(Media, parse_uuid(media_id, "media id"))
    if media is None:
        raise MediaNotFound(f"media {media_id} does not exist")
    return media


def set_placeholder(session: Session, media_id: uuid.UUID, placeholder: str | None) -> None:
    load_media(session, media_id).placeholder = placeholder


def record_derivatives(
    session: Session, media_id: uuid.UUID, media_root: Path, derivatives: Iterable[Derivative]
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
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def try_lock(session: Session, name: str) -> bool:
    """Take the named lock until the transaction ends, if no other session holds it
    (PostgreSQL advisory lock). SQLite serves one machine: always True."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(func.hashtext(name)))))


def lock_media(session: Session, media_id: uuid.UUID) -> None:
    """Take the media row's write lock until the transaction ends.

    Every transaction that changes a media's jobs takes it first, so two runs of one
    media (two tiers finishing together, two submitters) follow one another and each
    recomputes the status from rows the other has committed. An UPDATE, not SELECT ...
    FOR UPDATE, so that SQLite takes its write lock here too.
    """
    session.execute(update(Media).where(Media.id == media_id).values(status=Media.status))


def start_jobs(
    session: Session, media_id: uuid.UUID, job_names: Sequence[str], flow_run_id: str | None
) -> None:
    """Mark the jobs PENDING for this flow run (one row per media and job).

    A retried run (same flow run id) keeps the jobs it already finished: Prefect serves
    them from its result cache, and their rows keep their attempts.
    """
    lock_media(session, media_id)
    rows = {
        row.job: row
        for row in session.scalars(
            select(ProcessingJob).where(
                ProcessingJob.media_id == media_id, ProcessingJob.job.in_(job_names)
            )
        )
    }
    for name in job_names:
        row = rows.get(name) or ProcessingJob(media_id=media_id, job=name)
        if (
            flow_run_id
            and row.flow_run_id == flow_run_id
            and row.state in (JobState.SUCCEEDED, JobState.SKIPPED)
        ):
            continue
        row.state = JobState.PENDING
        row.attempts = 0
        row.error = None
        row.flow_run_id = flow_run_id
        row.started_at = None
        row.finished_at = None
        session.add(row)
    session.flush()
    refresh_media_status(session, media_id)


def plan_jobs(
    session: Session, media_id: uuid.UUID, job_names: Sequence[str], reset: bool = False
) -> None:
    """PENDING rows for jobs that have none yet (all of them with ``reset``), so the media
    stays PROCESSING until every tier's run has finished."""
    lock_media(session, media_id)
    rows = {
        row.job: row
        for row in session.scalars(select(ProcessingJob).where(ProcessingJob.media_id == media_id))
    }
    for name in job_names:
        row = rows.get(name)
        if row is None:
            session.add(ProcessingJob(media_id=media_id, job=name, attempts=0))
        elif reset:
            row.state, row.attempts, row.error, row.flow_run_id = JobState.PENDING, 0, None, None
    session.flush()
    refresh_media_status(session, media_id)


def assign_runs(session: Session, media_id: uuid.UUID, runs: dict[str, str]) -> None:
    """Record which flow run will do each planned job (job name -> flow run id), so that a
    run lost before it starts is found from the media's side too."""
    lock_media(session, media_id)
    for row in session.scalars(
        select(ProcessingJob).where(
            ProcessingJob.media_id == media_id,
            ProcessingJob.job.in_(list(runs)),
            ProcessingJob.state == JobState.PENDING,
            ProcessingJob.flow_run_id.is_(None),
        )
    ):
        row.flow_run_id = runs[row.job]
    session.flush()


def fail_unfinished_jobs(
    session: Session, media_id: uuid.UUID, flow_run_id: str, reason: str
) -> list[str]:
    """End the run's jobs that are still PENDING or RUNNING as FAILED with ``reason``
    (the run ended without recording them); returns their names."""
    lock_media(session, media_id)
    rows = list(
        session.scalars(
            select(ProcessingJob).where(
                ProcessingJob.media_id == media_id,
                ProcessingJob.flow_run_id == flow_run_id,
                ProcessingJob.state.in_([JobState.PENDING, JobState.RUNNING]),
            )
        )
    )
    for row in rows:
        row.state, row.error, row.finished_at = JobState.FAILED, reason, utcnow()
    session.flush()
    refresh_media_status(session, media_id)
    return sorted(row.job for row in rows)


def unfinished_jobs(session: Session) -> list[ProcessingJob]:
    """Every job row still PENDING or RUNNING, oldest first: what the reconciler checks."""
    return list(
        session.scalars(
            select(ProcessingJob)
            .where(ProcessingJob.state.in_([JobState.PENDING, JobState.RUNNING]))
            .order_by(ProcessingJob.updated_at)
        )
    )


def _job_row(session: Session, media_id: uuid.UUID, job: str) -> ProcessingJob:
    row = session.scalar(
        select(ProcessingJob).where(ProcessingJob.media_id == media_id, ProcessingJob.job == job)
    )
    if row is None:
        row = ProcessingJob(media_id=media_id, job=job, attempts=0)
        session.add(row)
    return row


def mark_job_running(session: Session, media_id: uuid.UUID, job: str) -> int:
    """Record the start of an attempt; returns the attempt's number (1 for the first)."""
    lock_media(session, media_id)
    row = _job_row(session, media_id, job)
    row.state = JobState.RUNNING
    row.attempts = (row.attempts or 0) + 1
    row.started_at = row.started_at or utcnow()
    session.flush()
    refresh_media_status(session, media_id)
    return row.attempts


def note_attempt_error(session: Session, media_id: uuid.UUID, job: str, error: str) -> None:
    """Keep the last attempt's error on the row while the job may still be retried."""
    _job_row(session, media_id, job).error = error
    session.flush()


def finish_job(
    session: Session,
    media_id: uuid.UUID,
    job: str,
    state: JobState,
    *,
    error: str | None = None,
    outputs: dict[str, Any] | None = None,
    estimated_cost: float | None = None,
) -> None:
    lock_media(session, media_id)
    row = _job_row(session, media_id, job)
    row.state = state
    row.error = error
    row.finished_at = utcnow()
    if outputs is not None:
        row.outputs = outputs
    if estimated_cost is not None:
        row.estimated_cost = estimated_cost
    session.flush()
    refresh_media_status(session, media_id)


def claim_provider_call(
    session: Session, provider: str, limit: int, window: timedelta = timedelta(seconds=60)
) -> float:
    """Record a call to ``provider`` if fewer than ``limit`` were made in the last
    ``window``, and return 0; otherwise return the seconds until a slot frees.

    A sliding window over every worker: calls of one provider are claimed one at a time
    (PostgreSQL: an advisory lock; SQLite: the write lock of the first statement), on the
    database's clock when it has one.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        key = func.hashtext(f"media-pipeline:provider-call:{provider}")
        session.execute(select(func.pg_advisory_xact_lock(key)))
        moment = session.scalar(select(func.clock_timestamp()))
    else:
        moment = utcnow()
    session.execute(
        delete(ProviderCall).where(
            ProviderCall.provider == provider, ProviderCall.called_at <= moment - window
        )
    )
    recent = session.scalars(
        select(ProviderCall.called_at)
        .where(ProviderCall.provider == provider)
        .order_by(ProviderCall.called_at)
    ).all()
    if len(recent) < limit:
        session.add(ProviderCall(provider=provider, called_at=moment))
        session.flush()
        return 0.0
    oldest = recent[-limit]
    if oldest.tzinfo is None:  # SQLite keeps no zone; stored as UTC
        oldest = oldest.replace(tzinfo=UTC)
    return max((oldest + window - moment).total_seconds(), 0.001)


def derive_status(states: Iterable[JobState]) -> MediaStatus:
    """Media status from its jobs' states (DESIGN.md section 4)."""
    states = list(states)
    if not states:
        return MediaStatus.UPLOADED
    if any(s in (JobState.PENDING, JobState.RUNNING) for s in states):
        return MediaStatus.PROCESSING
    if JobState.FAILED not in states:
        return MediaStatus.READY
    if JobState.SUCCEEDED in states:
        return MediaStatus.PARTIAL
    return MediaStatus.FAILED


def refresh_media_status(session: Session, media_id: uuid.UUID) -> MediaStatus:
    """Recompute the media's status from all of its job rows, whichever run wrote them."""
    jobs = list(session.scalars(select(ProcessingJob).where(ProcessingJob.media_id == media_id)))
    status = derive_status(job.state for job in jobs)
    media = load_media(session, media_id)
    media.status = status
    failed = [f"{job.job}: {job.error}" for job in jobs if job.state is JobState.FAILED]
    media.status_message = "; ".join(failed) or None
    session.flush()
    return status


def media_summary(session: Session, media_id: object) -> MediaSummary:
    """The media's status and every job's state and outputs."""
    media = load_media(session, media_id)
    return MediaSummary(
        media_id=str(media.id),
        alert_id=str(media.alert_id),
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


def active_transcription(session: Session, media_id: object) -> Transcription | None:
    return session.scalar(
        select(Transcription).where(
            Transcription.media_id == parse_uuid(media_id, "media id"),
            Transcription.is_active.is_(True),
        )
    )


def jobs_of_run(session: Session, flow_run_id: str) -> list[ProcessingJob]:
    return list(
        session.scalars(
            select(ProcessingJob)
            .where(ProcessingJob.flow_run_id == flow_run_id)
            .order_by(ProcessingJob.job)
        )
    )


def unfinished_jobs_of_runs(session: Session, flow_run_ids: list[str]) -> dict[str, list[str]]:
    """Flow run id -> the jobs it ran that failed or never finished (a crashed run)."""
    rows = session.execute(
        select(ProcessingJob.flow_run_id, ProcessingJob.job)
        .where(
            ProcessingJob.flow_run_id.in_(flow_run_ids),
            ProcessingJob.state.not_in([JobState.SUCCEEDED, JobState.SKIPPED]),
        )
        .order_by(ProcessingJob.job)
    )
    found: dict[str, list[str]] = {}
    for run_id, job in rows:
        found.setdefault(run_id, []).append(job)
    return found
