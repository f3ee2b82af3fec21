"""The outbox: the flow runs still to create, written in the transaction that plans a
media's jobs, so that accepting an upload never waits for Prefect.

A relay (``flows/relay.py``) claims rows oldest first, creates their runs, records each run
on its planned jobs and deletes the rows. A claim is a lease: the rows of a relay that died
are claimed again when it runs out. On PostgreSQL the claim skips rows another relay is
claiming (``FOR UPDATE SKIP LOCKED``); on SQLite (one machine) its write lock orders the
claims. Each run keeps the idempotency key of its row, so even a row sent twice (a lease
run out under a slow relay) makes one run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from db.jobs import assign_runs, finish_job
from db.models import JobState, Media, OutboxRun, utcnow


@dataclass(frozen=True)
class ClaimedRun:
    """A claimed row, read: what its relay sends to Prefect."""

    id: int
    media_id: uuid.UUID
    deployment: str
    body: dict[str, Any]
    jobs: list[str]


def enqueue_run(
    session: Session, media_id: uuid.UUID, deployment: str, body: dict[str, Any], jobs: list[str]
) -> None:
    """A run to create, unless one with its idempotency key waits already. The caller holds
    the media's lock (it has just planned the jobs), so two callers do not both add it."""
    key = body["idempotency_key"]
    if session.scalar(select(OutboxRun.id).where(OutboxRun.idempotency_key == key)) is None:
        session.add(
            OutboxRun(
                media_id=media_id,
                idempotency_key=key,
                deployment=deployment,
                body=body,
                jobs=jobs,
            )
        )
        session.flush()


def claim_runs(
    session: Session, limit: int, lease: timedelta, media_id: uuid.UUID | None = None
) -> list[ClaimedRun]:
    """Up to ``limit`` rows no live relay holds, oldest first (of one media, or all), leased
    to the caller for ``lease``."""
    now = utcnow()
    query = (
        select(OutboxRun)
        .where(or_(OutboxRun.claimed_until.is_(None), OutboxRun.claimed_until < now))
        .order_by(OutboxRun.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if media_id is not None:
        query = query.where(OutboxRun.media_id == media_id)
    rows = list(session.scalars(query))
    for row in rows:
        row.claimed_until = now + lease
    session.flush()
    return [ClaimedRun(r.id, r.media_id, r.deployment, r.body, r.jobs) for r in rows]


def release_runs(session: Session, ids: Sequence[int], error: str) -> None:
    """Give claimed rows back at once (their runs could not be created), saying why."""
    session.execute(
        update(OutboxRun)
        .where(OutboxRun.id.in_(ids))
        .values(claimed_until=None, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


def settle_runs(
    session: Session, outcomes: Sequence[tuple[ClaimedRun, str | None, str]]
) -> list[str]:
    """Record each created run on its planned jobs (``(row, run id, "")``), or end the jobs
    of a run Prefect refused as FAILED (``(row, None, why)``); the rows go. Returns the runs
    made for media erased since their row was claimed: the caller deletes them, so that no
    copy of an erased media's ids stays in Prefect. Media locked in one order, so that two
    relays settling together never wait for each other in a circle."""
    erased: list[str] = []
    for row, run_id, refusal in sorted(outcomes, key=lambda outcome: str(outcome[0].media_id)):
        if session.get(Media, row.media_id) is None:
            erased += [run_id] if run_id is not None else []
        elif run_id is not None:
            assign_runs(session, row.media_id, dict.fromkeys(row.jobs, run_id))
        else:
            for job in row.jobs:
                finish_job(session, row.media_id, job, JobState.FAILED, error=refusal)
    session.execute(
        delete(OutboxRun)
        .where(OutboxRun.id.in_([row.id for row, _, _ in outcomes]))
        .execution_options(synchronize_session=False)
    )
    return erased


@dataclass(frozen=True)
class OutboxDepth:
    """The backlog operators watch: how many runs wait for a relay, since when."""

    runs: int
    oldest: datetime | None
    failing: int  # rows whose last attempt failed (Prefect away, say)
    last_error: str | None  # why the oldest of those failed

    def age_seconds(self, moment: datetime) -> float:
        return 0.0 if self.oldest is None else max(0.0, (moment - self.oldest).total_seconds())


def outbox_depth(session: Session) -> OutboxDepth:
    runs, oldest, failing = session.execute(
        select(
            func.count(OutboxRun.id),
            func.min(OutboxRun.created_at),
            func.count(OutboxRun.last_error),
        )
    ).one()
    last_error = session.scalar(
        select(OutboxRun.last_error)
        .where(OutboxRun.last_error.is_not(None))
        .order_by(OutboxRun.id)
        .limit(1)
    )
    return OutboxDepth(runs, oldest, failing, last_error)


def media_with_planned_runs(session: Session) -> set[uuid.UUID]:
    """The media that have runs in the outbox: a relay creates them, no one else."""
    return set(session.scalars(select(OutboxRun.media_id).distinct()))
