"""A backfill's own flow run: it submits its media a few at a time and records how far it got.

At most ``in_flight`` of its runs exist at once (waiting or running), on the backfill queue
below ``low``: queues never hold thousands of its runs, and workers take them only when no
upload's run of that kind waits (``deployments/worker/slots.py``). Everything it knows is in
the app database (``db/backfill.py``), so a run killed at any moment, and scheduled again by
the reconciler, goes on where it was: a media is submitted once per backfill (its run's
idempotency key names the backfill and the run's media), and its outcome is read from its
job row. Each run does the job on ``backfill_batch`` media one after the other, which
divides the Prefect server's cost of a flow run (as much as the job's own work for a
thumbnail) among them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
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
    GONE,
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
from flows.run_creation import RunRequest, create_flow_runs
from flows.sources import MediaSource, read_source
from flows.submission import backfill_run_request
from media_pipeline.errors import MediaNotFound
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
    policy = get_settings().orchestration
    logger.info(
        "backfill %s: %s %s, at most %d runs at once, %d media a run, %s media a minute",
        backfill_id,
        backfill.job,
        backfill.selection,
        backfill.in_flight,
        policy.backfill_batch,
        f"{policy.backfill_per_minute:g}" if policy.backfill_per_minute else "any number of",
    )
    progress = Progress(backfill_id)
    pace = Pace(policy.backfill_per_minute, policy.backfill_batch)
    wave = max(1, backfill.in_flight // 2)
    while True:
        status, room = transaction(lambda session: step(session, backfill_id))
        if room >= wave or room == backfill.in_flight:  # in waves: fewer calls to Prefect
            room = pace.runs(room)
            if room > 0:  # runs that recorded their job may still be ending in Prefect
                room = min(room, backfill.in_flight - live_runs(backfill_id))
            if room > 0:
                pace.submitted += submit_next(backfill_id, room)
        final = status not in UNFINISHED
        if final:
            counts = progress.update(final=True)
            logger.info("backfill %s %s: %s", backfill_id, status.value.lower(), counts)
            return counts
        progress.update()
        time.sleep(policy.backfill_poll_seconds)


@dataclass
class Pace:
    """At most ``per_minute`` media submitted a minute (0: no limit), one run at a time
    (time the backfill could not use is not made up in a burst): the ceiling an operator
    puts on what a backfill asks of the Prefect server and the machines while uploads come
    in."""

    per_minute: float
    batch: int
    began: float = field(default_factory=time.monotonic)
    submitted: int = 0

    def runs(self, room: int) -> int:
        """How many of ``room`` runs (``batch`` media each) may be made now."""
        if not self.per_minute:
            return room
        minutes = (time.monotonic() - self.began) / 60
        allowed = self.per_minute * minutes + self.batch - self.submitted
        if allowed > self.batch:  # no catching up on time it could not use: no burst
            self.began += (allowed - self.batch) * 60 / self.per_minute
            allowed = self.batch
        return min(room, max(0, int(allowed // self.batch)))


def start(session: Session, backfill_id: uuid.UUID, run_id: str | None) -> Backfill:
    backfill = set_status(session, backfill_id, BackfillStatus.RUNNING)
    backfill.flow_run_id = run_id or backfill.flow_run_id
    return backfill


def step(session: Session, backfill_id: uuid.UUID) -> tuple[BackfillStatus, int]:
    """Settle finished runs; end the backfill when nothing is left, else how many runs
    may be made now."""
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


def submit_next(backfill_id: uuid.UUID, runs: int) -> int:
    """Make up to ``runs`` runs of ``backfill_batch`` media each: first one for the media a
    killed run had claimed but not given a run (the same run: its key names its media),
    then runs of the next selected ones. Each run is claimed, made and recorded before the
    next, so the media of at most one run are ever claimed without it. Returns how many
    media were submitted."""
    batch = get_settings().orchestration.backfill_batch
    submitted = 0
    with get_client(sync_client=True) as client:
        for _ in range(runs):
            claimed = transaction(lambda session: claim_batch(session, backfill_id, batch))
            if claimed is None:
                break
            request, media_ids, job = claimed
            run_id = create_flow_runs(client, [request])[0]
            record = {"backfill_id": backfill_id, "ids": media_ids, "job": job, "run_id": run_id}
            transaction(partial(assign_backfill_run, **record))
            submitted += len(media_ids)
    return submitted


def claim_batch(
    session: Session, backfill_id: uuid.UUID, size: int
) -> tuple[RunRequest, list[uuid.UUID], str] | None:
    """The run for the media claimed without one, or else for up to ``size`` selected
    media still to run (the others skipped); its media and job. None when none are left."""
    backfill = load_backfill(session, backfill_id)
    job = JOB_TABLE.get(backfill.job)
    criteria = criteria_of(backfill, job, get_settings().gemini.enhancement_categories)
    claimed = [
        item.media_id
        for item in items_in(session, backfill_id, BackfillItemState.SUBMITTED)
        if item.flow_run_id is None
    ]
    while not claimed:
        selected = items_in(session, backfill_id, BackfillItemState.SELECTED, size)
        if not selected:
            return None
        for item in selected:
            if claim_for_submission(session, backfill, item, criteria) is None:
                set_item(session, backfill_id, item.media_id, BackfillItemState.SUBMITTED)
                claimed.append(item.media_id)
    sources: list[MediaSource] = []
    for media_id in claimed:  # a media claimed by a killed run may have been erased since
        try:
            sources.append(read_source(session, media_id))
        except MediaNotFound:
            set_item(session, backfill_id, media_id, BackfillItemState.SKIPPED, reason=GONE)
    if not sources:
        return claim_batch(session, backfill_id, size)
    request = backfill_run_request(backfill_id, job, claimed, sources)
    return request, [source.media_id for source in sources], job.name


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
