"""Backfills in the app database: which media a job is run again on, and how far it got.

A backfill selects its media once, when it is created (one ``backfill_item`` each, oldest
media first); its flow run then submits them a few at a time and records each outcome. The
selection is checked again for each media just before it is submitted, so a media that an
upload's run has processed meanwhile, or that was erased, is skipped and never done twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from db.jobs import plan_jobs
from db.models import (
    Alert,
    Backfill,
    BackfillItem,
    BackfillItemState,
    BackfillStatus,
    JobState,
    Media,
    MediaDerivative,
    MediaStatus,
    ProcessingJob,
    Transcription,
    utcnow,
)
from db.repository import lock_media
from media_pipeline.enums import MediaType
from media_pipeline.errors import BackfillNotFound, PermanentError

Selection = Literal["missing", "outdated", "failed", "all"]
SELECTIONS: tuple[Selection, ...] = ("missing", "outdated", "failed", "all")
IN_PROGRESS = (JobState.PENDING, JobState.RUNNING)
UNFINISHED = (BackfillStatus.PENDING, BackfillStatus.RUNNING, BackfillStatus.CANCELLING)
GONE = "the media was erased or deleted"


class JobFacts(Protocol):
    """What a selection reads of a job of the table (``tasks.table.Job`` has these)."""

    @property
    def name(self) -> str: ...
    @property
    def media_type(self) -> MediaType: ...
    @property
    def version(self) -> int: ...
    @property
    def enhancement(self) -> bool: ...


@dataclass(frozen=True)
class Criteria:
    """Which media a backfill of ``job`` takes."""

    job: JobFacts
    selection: Selection
    enhancement_categories: Collection[str]
    media_type: MediaType | None = None
    alert_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise PermanentError(f"unknown selection {self.selection!r}: {', '.join(SELECTIONS)}")
        if self.media_type is not None and self.media_type is not self.job.media_type:
            raise PermanentError(
                f"{self.job.name} works on {self.job.media_type.value} media, not "
                f"{self.media_type.value}"
            )

    def filters(self) -> dict[str, Any]:
        """The filters as JSON (what the backfill row keeps)."""
        return {
            "type": self.job.media_type.value,
            "alert": str(self.alert_id) if self.alert_id else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    def media_conditions(self) -> list[ColumnElement[bool]]:
        """The media the job applies to (type, enhancement category) within the filters."""
        conditions = [
            Media.type == self.job.media_type,
            Media.status != MediaStatus.AWAITING_UPLOAD,
        ]
        if self.job.enhancement:
            categories = sorted({c.upper() for c in self.enhancement_categories})
            conditions += [Media.is_enhanced.is_(False), Alert.category_code.in_(categories)]
        if self.alert_id is not None:
            conditions.append(Media.alert_id == self.alert_id)
        if self.since is not None:
            conditions.append(Media.created_at >= self.since)
        if self.until is not None:
            conditions.append(Media.created_at < self.until)
        return conditions

    def job_condition(self) -> ColumnElement[bool]:
        """What the media's row of the job (outer-joined: NULL columns when it has none)
        must say. A media whose job is in progress (an upload's run) is never taken."""
        state = ProcessingJob.state
        outdated = func.coalesce(ProcessingJob.job_version, 1) < self.job.version
        by_selection: dict[Selection, ColumnElement[bool]] = {
            "missing": or_(state.is_(None), state.not_in([*IN_PROGRESS, JobState.SUCCEEDED])),
            "outdated": and_(state == JobState.SUCCEEDED, outdated),
            "failed": state == JobState.FAILED,
            "all": or_(state.is_(None), state.not_in(IN_PROGRESS)),
        }
        return by_selection[self.selection]

    def statement(self) -> Any:
        """``SELECT media.id, media.created_at`` of the matching media, oldest first."""
        return (
            select(Media.id, Media.created_at)
            .join(Alert, Alert.id == Media.alert_id)
            .outerjoin(
                ProcessingJob,
                and_(ProcessingJob.media_id == Media.id, ProcessingJob.job == self.job.name),
            )
            .where(*self.media_conditions(), self.job_condition())
            .order_by(Media.created_at, Media.id)
        )


def matching_media(session: Session, criteria: Criteria) -> list[uuid.UUID]:
    return list(session.scalars(criteria.statement()))


def still_matches(session: Session, criteria: Criteria, media_id: uuid.UUID) -> bool:
    """The media is still one the backfill should run (read under its lock)."""
    statement = criteria.statement().where(Media.id == media_id)
    return session.execute(statement).first() is not None


def create_backfill(
    session: Session, criteria: Criteria, in_flight: int, backfill_id: uuid.UUID | None = None
) -> Backfill:
    """The backfill and one item per matching media, in one transaction (DONE at once when
    no media match)."""
    backfill = Backfill(
        id=backfill_id or uuid.uuid4(),
        job=criteria.job.name,
        job_version=criteria.job.version,
        selection=criteria.selection,
        filters=criteria.filters(),
        in_flight=in_flight,
    )
    session.add(backfill)
    session.flush()
    rows = [
        {
            "backfill_id": backfill.id,
            "media_id": media_id,
            "position": position,
            "state": BackfillItemState.SELECTED,
        }
        for position, media_id in enumerate(matching_media(session, criteria))
    ]
    for start in range(0, len(rows), 1000):
        session.execute(insert(BackfillItem), rows[start : start + 1000])
    if not rows:  # nothing to do: done at once, with no run
        backfill.status, backfill.finished_at = BackfillStatus.DONE, utcnow()
    return backfill


def load_backfill(session: Session, backfill_id: uuid.UUID) -> Backfill:
    backfill = session.get(Backfill, backfill_id)
    if backfill is None:
        raise BackfillNotFound(f"backfill {backfill_id} does not exist")
    return backfill


def criteria_of(backfill: Backfill, job: JobFacts, categories: Collection[str]) -> Criteria:
    filters = backfill.filters
    return Criteria(
        job=job,
        selection=backfill.selection,  # type: ignore[arg-type]
        enhancement_categories=categories,
        alert_id=uuid.UUID(filters["alert"]) if filters.get("alert") else None,
        since=datetime.fromisoformat(filters["since"]) if filters.get("since") else None,
        until=datetime.fromisoformat(filters["until"]) if filters.get("until") else None,
    )


def item_counts(session: Session, backfill_id: uuid.UUID) -> dict[str, Any]:
    """Items per state, and the estimated cost of those done."""
    counts = {state.value.lower(): 0 for state in BackfillItemState}
    for state, count in session.execute(
        select(BackfillItem.state, func.count())
        .where(BackfillItem.backfill_id == backfill_id)
        .group_by(BackfillItem.state)
    ):
        counts[state.value.lower()] = count
    cost = session.scalar(
        select(func.sum(BackfillItem.estimated_cost)).where(BackfillItem.backfill_id == backfill_id)
    )
    counts["selected"] = sum(counts[s.value.lower()] for s in BackfillItemState)
    return {**counts, "estimated_cost": round(cost or 0.0, 6)}


def items_in(
    session: Session, backfill_id: uuid.UUID, state: BackfillItemState, limit: int | None = None
) -> list[BackfillItem]:
    statement = (
        select(BackfillItem)
        .where(BackfillItem.backfill_id == backfill_id, BackfillItem.state == state)
        .order_by(BackfillItem.position)
    )
    return list(session.scalars(statement.limit(limit) if limit else statement))


def set_item(
    session: Session,
    backfill_id: uuid.UUID,
    media_id: uuid.UUID,
    state: BackfillItemState,
    *,
    flow_run_id: str | None = None,
    reason: str | None = None,
    estimated_cost: float | None = None,
) -> None:
    values: dict[str, Any] = {"state": state, "reason": reason, "estimated_cost": estimated_cost}
    if flow_run_id is not None:
        values["flow_run_id"] = flow_run_id
    session.execute(
        update(BackfillItem)
        .where(BackfillItem.backfill_id == backfill_id, BackfillItem.media_id == media_id)
        .values(**values)
    )


def outcome(row: ProcessingJob | None, flow_run_id: str) -> BackfillItemState | None:
    """A submitted item's outcome from the media's job row, None while its run owes it.
    A row that another run took over and finished counts as done: the output is there."""
    if row is None:
        return BackfillItemState.SKIPPED  # erased meanwhile
    if row.state in IN_PROGRESS:
        return None
    if row.state is JobState.FAILED and row.flow_run_id == flow_run_id:
        return BackfillItemState.FAILED
    if row.state is JobState.SKIPPED:
        return BackfillItemState.SKIPPED
    return BackfillItemState.DONE


def settle_submitted(session: Session, backfill: Backfill) -> int:
    """Record the outcome of every submitted item whose run has finished it; returns how
    many runs are still in flight (media claimed without a run count as one)."""
    submitted = items_in(session, backfill.id, BackfillItemState.SUBMITTED)
    if not submitted:
        return 0
    rows = {
        row.media_id: row
        for row in session.scalars(
            select(ProcessingJob).where(
                ProcessingJob.job == backfill.job,
                ProcessingJob.media_id.in_([item.media_id for item in submitted]),
            )
        )
    }
    in_flight: set[str | None] = set()
    for item in submitted:
        row = rows.get(item.media_id)
        state = None if item.flow_run_id is None else outcome(row, item.flow_run_id)
        if state is None:  # claimed, its run not made yet; or its run owes it
            in_flight.add(item.flow_run_id)
            continue
        reason = row.error if row is not None and state is not BackfillItemState.DONE else None
        cost = row.estimated_cost if row is not None else None
        set_item(session, backfill.id, item.media_id, state, reason=reason, estimated_cost=cost)
    return len(in_flight)


def claim_for_submission(
    session: Session, backfill: Backfill, item: BackfillItem, criteria: Criteria
) -> str | None:
    """Under the media's lock: None when the item may be submitted now, else why it is
    skipped (erased, no longer matching, in progress in another run); the skip is
    recorded."""
    exists = session.scalar(select(Media.id).where(Media.id == item.media_id))
    if exists is not None:
        lock_media(session, item.media_id)
    if exists is None:
        reason = GONE
    elif not still_matches(session, criteria, item.media_id):
        reason = f"no longer {backfill.selection} for {backfill.job}, or in progress elsewhere"
    else:
        return None
    set_item(session, backfill.id, item.media_id, BackfillItemState.SKIPPED, reason=reason)
    return reason


def assign_backfill_run(
    session: Session, backfill_id: uuid.UUID, *, ids: Sequence[uuid.UUID], job: str, run_id: str
) -> None:
    """The media's job rows belong to the backfill's run from now on (PENDING, unless that
    run has already taken them), and their items record the run."""
    for media_id in ids:
        lock_media(session, media_id)
        row = session.scalar(
            select(ProcessingJob).where(
                ProcessingJob.media_id == media_id, ProcessingJob.job == job
            )
        )
        if row is None or row.flow_run_id != run_id:
            plan_jobs(session, media_id, [job], reset=True)
            session.execute(
                update(ProcessingJob)
                .where(ProcessingJob.media_id == media_id, ProcessingJob.job == job)
                .values(flow_run_id=run_id)
            )
        set_item(session, backfill_id, media_id, BackfillItemState.SUBMITTED, flow_run_id=run_id)


def set_status(
    session: Session, backfill_id: uuid.UUID, status: BackfillStatus, message: str | None = None
) -> Backfill:
    """Move the backfill on; a final status stays, and a cancelling one is not resumed.
    Its media not yet submitted are skipped when it ends early."""
    backfill = load_backfill(session, backfill_id)
    if backfill.status not in UNFINISHED:
        return backfill
    if backfill.status is BackfillStatus.CANCELLING and status is BackfillStatus.RUNNING:
        return backfill
    backfill.status = status
    if status not in UNFINISHED:
        backfill.finished_at = utcnow()
        backfill.message = message
        if status is not BackfillStatus.DONE:
            session.execute(
                update(BackfillItem)
                .where(
                    BackfillItem.backfill_id == backfill_id,
                    BackfillItem.state == BackfillItemState.SELECTED,
                )
                .values(
                    state=BackfillItemState.SKIPPED,
                    reason=f"the backfill ended {status.value}",
                )
            )
    session.flush()
    return backfill


def unfinished_backfills(session: Session) -> Sequence[Backfill]:
    return session.scalars(
        select(Backfill).where(Backfill.status.in_(UNFINISHED)).order_by(Backfill.created_at)
    ).all()


def recent_backfills(session: Session, limit: int = 20) -> Sequence[Backfill]:
    return session.scalars(select(Backfill).order_by(Backfill.created_at.desc()).limit(limit)).all()


def known_durations(session: Session, media_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, float]:
    """Seconds of audio of each media, where a waveform or a transcription measured it."""
    found: dict[uuid.UUID, float] = {}
    for start in range(0, len(media_ids), 1000):
        chunk = media_ids[start : start + 1000]
        for media_id, duration in session.execute(
            select(MediaDerivative.media_id, MediaDerivative.duration).where(
                MediaDerivative.media_id.in_(chunk), MediaDerivative.duration.is_not(None)
            )
        ):
            found[media_id] = duration
        for media_id, duration in session.execute(
            select(Transcription.media_id, func.max(Transcription.duration))
            .where(Transcription.media_id.in_(chunk), Transcription.duration.is_not(None))
            .group_by(Transcription.media_id)
        ):
            found.setdefault(media_id, duration)
    return found


def media_sizes(session: Session, media_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    sizes: dict[uuid.UUID, int] = {}
    for start in range(0, len(media_ids), 1000):
        chunk = media_ids[start : start + 1000]
        rows = session.execute(select(Media.id, Media.size).where(Media.id.in_(chunk)))
        sizes.update({media_id: size for media_id, size in rows})
    return sizes
