"""A backfill's own flow run: it submits its media a few at a time and records how far it got.

At most ``in_flight`` of its runs exist at once (waiting or running), on the backfill queue
below ``low``: queues never hold thousands of its runs, and workers take them only when no
upload's run of that kind waits (``deployments/worker/slots.py``). Everything it knows is in
the app database (``db/backfill.py``), so a run killed at any moment, and scheduled again by
the reconciler, goes on where it was: a media is submitted once per backfill (the run's
idempotency key names the backfill), and its outcome is read from its job row.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from sqlalchemy.orm import Session

from db.backfill import (
    UNFINISHED,
    assign_backfill_run,
    claim_for_submission,
    criteria_of,
    item_counts,
    items_in,
    load_backfill,
    set_item,
    set_status,
    settle_submitted,
)
from db.models import Backfill, BackfillItemState, BackfillStatus
from db.session import transaction
from flows.run_creation import create_flow_runs
from flows.sources import read_source
from flows.submission import Submission, create_runs
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_TAG, JOB_TABLE

FLOW_NAME = "backfill"


def yield_cpu_to_uploads(tags: Iterable[str]) -> None:
    """A backfill's media run lowers its process's CPU priority (``backfill_niceness``),
    once: uploads' runs, the server and the API go first. Called as early as the run's
    process allows (the warm worker's child, before Prefect's engine and its threads
    start), and again by the flow for workers that start the engine themselves."""
    wanted = get_settings().orchestration.backfill_niceness
    if BACKFILL_TAG in tags and (current := os.nice(0)) < wanted:
        os.nice(wanted - current)


def backfill_run_name() -> str:
    return f"backfill · {str(runtime.flow_run.parameters.get('backfill_id', '?'))[:8]}"


@flow(name=FLOW_NAME, flow_run_name=backfill_run_name, validate_parameters=True)
def run_backfill(backfill_id: uuid.UUID) -> dict[str, Any]:
    """Run one job again over the media a backfill selected, at its pace; returns its
    counts (selected, submitted, done, failed, skipped, estimated cost)."""
    logger = get_run_logger()
    run_id = str(runtime.flow_run.id or "") or None
    backfill = transaction(lambda session: start(session, backfill_id, run_id))
    logger.info(
        "backfill %s: %s %s, at most %d runs at once",
        backfill_id,
        backfill.job,
        backfill.selection,
        backfill.in_flight,
    )
    progress = Progress(backfill_id)
    poll = get_settings().orchestration.backfill_poll_seconds
    batch = max(1, backfill.in_flight // 2)
    while True:
        status, room = transaction(lambda session: step(session, backfill_id))
        if room >= batch or room == backfill.in_flight:  # in batches: fewer calls to Prefect
            # Runs that recorded their job may still be ending in Prefect.
            room = min(room, backfill.in_flight - live_runs(backfill_id))
            if room > 0:
                submit_next(backfill_id, room)
        final = status not in UNFINISHED
        if final:
            counts = progress.update(final=True)
            logger.info("backfill %s %s: %s", backfill_id, status.value.lower(), counts)
            return counts
        progress.update()
        time.sleep(poll)


def start(session: Session, backfill_id: uuid.UUID, run_id: str | None) -> Backfill:
    backfill = set_status(session, backfill_id, BackfillStatus.RUNNING)
    backfill.flow_run_id = run_id or backfill.flow_run_id
    return backfill


def step(session: Session, backfill_id: uuid.UUID) -> tuple[BackfillStatus, int]:
    """Settle finished runs; end the backfill when nothing is left, else how many media
    may be submitted now."""
    backfill = load_backfill(session, backfill_id)
    in_flight = settle_submitted(session, backfill)
    cancelling = backfill.status is BackfillStatus.CANCELLING
    left = 0 if cancelling else len(items_in(session, backfill_id, BackfillItemState.SELECTED, 1))
    if in_flight == 0 and left == 0:
        final = BackfillStatus.CANCELLED if cancelling else BackfillStatus.DONE
        return set_status(session, backfill_id, final).status, 0
    return backfill.status, 0 if cancelling else max(0, backfill.in_flight - in_flight)


def live_runs(backfill_id: uuid.UUID) -> int:
    """The backfill's media runs that exist in Prefect now: waiting, claimed or running."""
    live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with get_client(sync_client=True) as client:
        return client.count_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[BACKFILL_TAG, f"backfill-{backfill_id}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live)),
            )
        )


def submit_next(backfill_id: uuid.UUID, room: int) -> None:
    """Submit up to ``room`` media: first those a killed run had claimed but not yet given
    a flow run, then the next selected ones."""

    def claim(session: Session) -> list[Submission]:
        backfill = load_backfill(session, backfill_id)
        job = JOB_TABLE.get(backfill.job)
        criteria = criteria_of(backfill, job, get_settings().gemini.enhancement_categories)
        claimed = [
            i
            for i in items_in(session, backfill_id, BackfillItemState.SUBMITTED)
            if i.flow_run_id is None
        ]
        for item in items_in(session, backfill_id, BackfillItemState.SELECTED, room):
            if claim_for_submission(session, backfill, item, criteria) is None:
                set_item(session, backfill_id, item.media_id, BackfillItemState.SUBMITTED)
                claimed.append(item)
        return [
            Submission(
                read_source(session, item.media_id),
                [job],
                f"backfill-{backfill_id}",
                named=True,
                backfill=backfill_id,
            )
            for item in claimed
        ]

    submissions = transaction(claim)
    if not submissions:
        return
    with get_client(sync_client=True) as client:
        runs = [
            create_runs(s, lambda requests: create_flow_runs(client, requests)) for s in submissions
        ]

    def assign(session: Session) -> None:
        for submission, made in zip(submissions, runs, strict=True):
            for job, run_id in made.items():
                assign_backfill_run(session, backfill_id, submission.source.media_id, job, run_id)

    transaction(assign)


class Progress:
    """The backfill's progress artifact, updated when its counts have changed (at most
    every ``PROGRESS_SECONDS``), and its table of counts, every ``TABLE_SECONDS`` (each is
    a new version of the table); both at the end."""

    PROGRESS_SECONDS = 2.0
    TABLE_SECONDS = 15.0

    def __init__(self, backfill_id: uuid.UUID) -> None:
        self.backfill_id = backfill_id
        self.artifact_id: uuid.UUID | None = None
        self.last: dict[str, Any] | None = None
        self.progress_due = self.table_due = 0.0

    def update(self, final: bool = False) -> dict[str, Any]:
        """The counts as last read (at the end, as they are)."""
        if not final and time.monotonic() < self.progress_due:
            return self.last or {}
        self.progress_due = time.monotonic() + self.PROGRESS_SECONDS
        counts = transaction(lambda session: item_counts(session, self.backfill_id))
        if counts == self.last and not final:
            return counts
        finished = counts["done"] + counts["failed"] + counts["skipped"]
        percent = 100.0 * finished / counts["selected"] if counts["selected"] else 100.0
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(
                percent, key=f"backfill-{self.backfill_id}", description="Media finished, %"
            )
        else:
            update_progress_artifact(self.artifact_id, percent)
        if final or time.monotonic() >= self.table_due:
            self.table_due = time.monotonic() + self.TABLE_SECONDS
            create_table_artifact(
                [{"count": name, "value": value} for name, value in counts.items()],
                key=f"backfill-{self.backfill_id}-counts",
                description="Selected, submitted, done, failed, skipped, estimated cost (USD)",
            )
        self.last = counts
        return counts
