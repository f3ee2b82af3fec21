"""The jobs of a media: planning, attempts, outcomes, and the media status derived from them.

Every transaction that changes a media's jobs takes the media row's lock first
(``lock_media``), so concurrent runs of one media see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import JobState, MediaStatus, ProcessingJob, utcnow
from db.repository import load_media, lock_media


def try_lock(session: Session, name: str) -> bool:
    """Take the named lock until the transaction ends, if no other session holds it
    (PostgreSQL advisory lock). SQLite serves one machine: always True."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(func.hashtext(name)))))


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
            rows[name] = ProcessingJob(media_id=media_id, job=name, attempts=0)
            session.add(rows[name])
        elif reset:
            row.state, row.attempts, row.error, row.flow_run_id = JobState.PENDING, 0, None, None
    session.flush()
    refresh_media_status(session, media_id, list(rows.values()))


def job_rows(session: Session, media_id: uuid.UUID) -> dict[str, ProcessingJob]:
    """The media's job rows by job name."""
    query = select(ProcessingJob).where(ProcessingJob.media_id == media_id)
    return {row.job: row for row in session.scalars(query)}


def waits_for_run(row: ProcessingJob) -> bool:
    """Planned, and no flow run made for it yet (its run waits in the outbox)."""
    return row.state is JobState.PENDING and row.flow_run_id is None


def assign_runs(session: Session, media_id: uuid.UUID, runs: dict[str, str]) -> None:
    """Record which flow run will do each planned job (job name -> flow run id), so that a
    run lost before it starts is found from the media's side too."""
    lock_media(session, media_id)
    jobs_of: dict[str, list[str]] = {}
    for job, run in runs.items():
        jobs_of.setdefault(run, []).append(job)
    for run, jobs in jobs_of.items():  # one statement per run: no rows loaded
        session.execute(
            update(ProcessingJob)
            .where(
                ProcessingJob.media_id == media_id,
                ProcessingJob.job.in_(jobs),
                ProcessingJob.state == JobState.PENDING,
                ProcessingJob.flow_run_id.is_(None),
            )
            .values(flow_run_id=run)
            .execution_options(synchronize_session=False)
        )


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
    job_version: int | None = None,
) -> None:
    """The job's outcome; a SUCCEEDED one records the ``job_version`` that made its outputs."""
    lock_media(session, media_id)
    row = _job_row(session, media_id, job)
    row.state = state
    row.error = error
    row.finished_at = utcnow()
    if outputs is not None:
        row.outputs = outputs
    if estimated_cost is not None:
        row.estimated_cost = estimated_cost
    if job_version is not None:
        row.job_version = job_version
    session.flush()
    refresh_media_status(session, media_id)


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


def refresh_media_status(
    session: Session, media_id: uuid.UUID, jobs: list[ProcessingJob] | None = None
) -> MediaStatus:
    """Recompute the media's status from all of its job rows, whichever run wrote them
    (``jobs`` when the caller has just read every one of them under the media's lock)."""
    if jobs is None:
        of_media = select(ProcessingJob).where(ProcessingJob.media_id == media_id)
        jobs = list(session.scalars(of_media))
    status = derive_status(job.state for job in jobs)
    media = load_media(session, media_id)
    media.status = status
    failed = [f"{job.job}: {job.error}" for job in jobs if job.state is JobState.FAILED]
    media.status_message = "; ".join(failed) or None
    session.flush()
    return status


def jobs_of_run(session: Session, flow_run_id: str) -> list[ProcessingJob]:
    return list(
        session.scalars(
            select(ProcessingJob)
            .where(ProcessingJob.flow_run_id == flow_run_id)
            .order_by(ProcessingJob.job)
        )
    )


def unfinished_jobs_of_runs(
    session: Session, flow_run_ids: list[str]
) -> dict[str, list[tuple[str, str | None]]]:
    """Flow run id -> (job, error) of the jobs it ran that failed or never finished."""
    rows = session.execute(
        select(ProcessingJob.flow_run_id, ProcessingJob.job, ProcessingJob.error)
        .where(
            ProcessingJob.flow_run_id.in_(flow_run_ids),
            ProcessingJob.state.not_in([JobState.SUCCEEDED, JobState.SKIPPED]),
        )
        .order_by(ProcessingJob.job)
    )
    found: dict[str, list[tuple[str, str | None]]] = {}
    for run_id, job, error in rows:
        found.setdefault(run_id, []).append((job, error))
    return found
