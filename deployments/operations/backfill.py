"""Backfills for the app, the CLI and the HTTP API: estimate one, start it, read it, cancel
it; and the reconciler's care of their own flow runs.

A backfill runs one job of the table again over existing media: those that lack its output
(``missing``), whose output an older version of the job made (``outdated``), whose last run
of it failed (``failed``), or all of them. Starting one records it and its media in the app
database and creates its flow run (``flows/backfill.py``) on the ``<pool>-backfills``
deployment, which paces the media's runs on the backfill queue.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled
from sqlalchemy.orm import Session

from db.backfill import (
    Criteria,
    create_backfill,
    item_counts,
    known_durations,
    load_backfill,
    matching_media,
    media_sizes,
    recent_backfills,
    set_status,
    unfinished_backfills,
)
from db.models import Backfill, BackfillStatus
from db.session import session_scope, transaction
from deployments.operations.run_health import (
    diagnose,
    read_heartbeats,
    read_runs,
    read_workers,
    reschedule_or_give_up,
)
from flows.backfill import FLOW_NAME
from flows.rate_limits import backfill_reserve, calls_per_minute
from flows.run_creation import api_client, create_flow_runs, run_request
from media_pipeline.enums import MediaType
from media_pipeline.errors import PermanentError
from media_pipeline.settings import OrchestrationSettings, get_settings
from media_pipeline.storage import parse_uuid
from tasks.table import BACKFILL_CONTROL_TAG, JOB_TABLE

VOICE_NOTE_BITS_PER_SECOND = 32_000  # to guess a duration nothing has measured yet


def criteria(
    job: str,
    selection: str,
    media_type: str | None = None,
    alert_id: uuid.UUID | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Criteria:
    """The backfill's selection, checked: a known job and selection, a type it works on."""
    kind = None
    if media_type is not None:
        if media_type.upper() not in MediaType.__members__:
            raise PermanentError(f"unknown media type {media_type!r}: IMAGE, AUDIO or VIDEO")
        kind = MediaType(media_type.upper())
    if since is not None and until is not None and since >= until:
        raise PermanentError("--since must come before --until")
    return Criteria(
        job=JOB_TABLE.get(job),
        selection=selection,  # type: ignore[arg-type]  # checked by Criteria
        enhancement_categories=get_settings().gemini.enhancement_categories,
        media_type=kind,
        alert_id=parse_uuid(alert_id, "alert id") if alert_id else None,
        since=since,
        until=until,
    )


def estimate(session: Session, chosen: Criteria) -> dict[str, Any]:
    """How many media, of which types, how long the backfill's pace makes it take at least,
    and for a provider's job the estimated cost and how long its rate limit makes it take
    (uploads keep a reserve of the calls)."""
    media = matching_media(session, chosen)
    job = chosen.job
    found: dict[str, Any] = {
        "job": job.name,
        "job_version": job.version,
        "selection": chosen.selection,
        "filters": chosen.filters(),
        "count": len(media),
        "types": dict(Counter([job.media_type.value] * len(media))),
        "provider": job.provider,
        "estimated_cost": 0.0,
        "provider_calls": 0,
        "provider_minutes": 0.0,
        "pace_minutes": 0.0,
    }
    settings = get_settings()
    if per_minute := settings.orchestration.backfill_per_minute:
        found["pace_minutes"] = round(len(media) / per_minute, 1)
    if job.provider is None or not media:
        return found
    if job.output == "transcription":
        durations = known_durations(session, media)
        sizes = media_sizes(session, media)
        seconds = [
            durations.get(m) or sizes.get(m, 0) * 8 / VOICE_NOTE_BITS_PER_SECOND for m in media
        ]
        chunk = settings.openai.transcription_max_chunk_seconds
        calls = sum(max(1, math.ceil(s / chunk)) for s in seconds)
        cost = sum(seconds) / 60 * settings.openai.transcription_price_per_minute
    else:
        calls = len(media)
        cost = calls * settings.gemini.enhancement_price_per_image
    limit = calls_per_minute()[job.provider]
    per_window = max(1, limit - backfill_reserve(limit))
    window_minutes = settings.orchestration.rate_window_seconds / 60
    return found | {
        "estimated_cost": round(cost, 4),
        "provider_calls": calls,
        "provider_minutes": round(calls / per_window * window_minutes, 1),
    }


def describe(session: Session, backfill: Backfill) -> dict[str, Any]:
    return {
        "id": str(backfill.id),
        "job": backfill.job,
        "job_version": backfill.job_version,
        "selection": backfill.selection,
        "filters": backfill.filters,
        "status": backfill.status.value,
        "message": backfill.message,
        "in_flight": backfill.in_flight,
        "flow_run_id": backfill.flow_run_id,
        "created_at": backfill.created_at.isoformat(timespec="seconds"),
        "finished_at": backfill.finished_at.isoformat(timespec="seconds")
        if backfill.finished_at
        else None,
        "counts": item_counts(session, backfill.id),
    }


def estimate_backfill(job: str, selection: str, **filters: Any) -> dict[str, Any]:
    """What a backfill would do (``--dry-run``), without starting it."""
    chosen = criteria(job, selection, **filters)
    return transaction(lambda session: estimate(session, chosen))


def start_backfill(
    job: str,
    selection: str,
    client: SyncPrefectClient | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """Record the backfill and its media, and create its flow run (none when no media
    match: it is DONE at once); what it is, with the estimate. Its progress:
    ``get_backfill``."""
    chosen = criteria(job, selection, **filters)
    in_flight = get_settings().orchestration.backfill_in_flight

    def create(session: Session) -> tuple[uuid.UUID, dict[str, Any]]:
        found = estimate(session, chosen)
        return create_backfill(session, chosen, in_flight).id, found

    backfill_id, found = transaction(create)
    if found["count"]:
        with api_client(client) as api:
            run_id = create_control_run(api, backfill_id)
        transaction(lambda session: record_run(session, backfill_id, run_id))
    return get_backfill(str(backfill_id)) | {"estimate": found}


def record_run(session: Session, backfill_id: uuid.UUID, run_id: str) -> None:
    load_backfill(session, backfill_id).flow_run_id = run_id


def create_control_run(client: SyncPrefectClient, backfill_id: uuid.UUID) -> str:
    """The backfill's own flow run (the same one on every call)."""
    pool = get_settings().orchestration.work_pool
    request = run_request(
        f"{FLOW_NAME}/{pool}-backfills",
        parameters={"backfill_id": str(backfill_id)},
        name=f"backfill · {str(backfill_id)[:8]}",
        idempotency_key=f"backfill-{backfill_id}",
        tags=[BACKFILL_CONTROL_TAG, f"backfill-{backfill_id}"],
    )
    return create_flow_runs(client, [request])[0]


def get_backfill(backfill_id: uuid.UUID | str) -> dict[str, Any]:
    """Its job, selection, status and counts (selected, submitted, done, failed, skipped,
    estimated cost so far)."""
    backfill_uuid = parse_uuid(backfill_id, "backfill id")
    return transaction(lambda session: describe(session, load_backfill(session, backfill_uuid)))


def list_backfills(limit: int = 20) -> list[dict[str, Any]]:
    """The newest backfills, unfinished first."""
    with session_scope() as session:
        found = [describe(session, backfill) for backfill in recent_backfills(session, limit)]
    finished = ("DONE", "CANCELLED", "FAILED")
    return sorted(found, key=lambda b: b["status"] in finished)


def cancel_backfill(
    backfill_id: uuid.UUID | str, client: SyncPrefectClient | None = None
) -> dict[str, Any]:
    """Stop submitting: runs in flight finish (a media's outputs are never left half
    replaced), the rest are skipped. A backfill whose run has not started ends at once."""
    backfill_uuid = parse_uuid(backfill_id, "backfill id")

    def cancel(session: Session) -> tuple[BackfillStatus, str | None]:
        backfill = load_backfill(session, backfill_uuid)
        if backfill.status is BackfillStatus.PENDING:
            return set_status(session, backfill_uuid, BackfillStatus.CANCELLED).status, (
                backfill.flow_run_id
            )
        return set_status(session, backfill_uuid, BackfillStatus.CANCELLING).status, None

    status, waiting_run = transaction(cancel)
    if status is BackfillStatus.CANCELLED and waiting_run is not None:
        with api_client(client) as api:
            api.set_flow_run_state(
                uuid.UUID(waiting_run), Cancelled(message="backfill cancelled"), force=True
            )
    return get_backfill(backfill_uuid)


def recover_backfills(
    client: SyncPrefectClient,
    session: Session,
    moment: datetime,
    api_up_since: datetime,
    policy: OrchestrationSettings,
) -> list[tuple[str, str | None, str, str]]:
    """The reconciler's care of unfinished backfills: a run never made is made, a stranded
    or ended one is scheduled again (it resumes where it was), one cancelled in the UI
    cancels its backfill, one beyond recovery fails it. (backfill, run, action, reason)."""
    stall = timedelta(seconds=policy.stall_seconds)
    pending = [(b.id, b.flow_run_id, b.created_at) for b in unfinished_backfills(session)]
    done: list[tuple[str, str | None, str, str]] = []
    endings: dict[uuid.UUID, tuple[BackfillStatus, str]] = {}
    runs = read_runs(client, [run_id for _, run_id, _ in pending if run_id])
    workers = read_workers(client, {r.work_pool_name for r in runs.values()})
    running = [r.id for r in runs.values() if r.state and r.state.type is StateType.RUNNING]
    heartbeats = read_heartbeats(client, running, moment - 2 * stall)
    for backfill_id, run_id, created in pending:
        run = runs.get(run_id) if run_id else None
        if run_id is None:
            if moment - max(created, api_up_since) > stall:
                made = create_control_run(client, backfill_id)
                record_run(session, backfill_id, made)
                done.append((str(backfill_id), made, "resubmitted", "its run was never made"))
        elif run is None:
            endings[backfill_id] = BackfillStatus.FAILED, "its flow run no longer exists"
        elif run.state is not None and run.state.type is StateType.CANCELLED:
            endings[backfill_id] = BackfillStatus.CANCELLED, "its run was cancelled"
        elif reason := diagnose(run, workers, heartbeats.get(run.id), moment, api_up_since, stall):
            again = "start a new backfill with `media-pipeline backfill`"
            outcome = reschedule_or_give_up(client, run, reason, policy, again)
            if outcome is not None and outcome[0] == "failed":
                endings[backfill_id] = BackfillStatus.FAILED, outcome[1]
            elif outcome is not None:
                done.append((str(backfill_id), run_id, *outcome))
    for backfill_id, (status, message) in endings.items():
        set_status(session, backfill_id, status, message)
    runs_of = {backfill_id: run_id for backfill_id, run_id, _ in pending}
    return done + [
        (str(b), runs_of[b], status.value.lower(), message)
        for b, (status, message) in endings.items()
    ]
