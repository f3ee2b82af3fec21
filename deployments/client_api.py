"""What the app's backend calls: submit a media, read a run's status, queue stats, retries,
erasure (``erase_media``, ``erase_alert``: the receipts).

Plain functions over the Prefect client; the CLI wraps them. ``submit_media`` returns at
once with one flow run per priority tier the media needs; calling it again returns the
same runs (idempotency keys), unless ``reprocess`` asks for new ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStartTime,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from db.jobs import jobs_of_run, unfinished_jobs_of_runs
from db.repository import media_summary
from db.session import session_scope, transaction
from deployments.erasure import erase_alert as erase_alert  # the app imports them from here
from deployments.erasure import erase_media as erase_media
from deployments.queue_board import FAILED_STATES, queue_stats, state_filter
from flows.submission import FLOW_NAME, api_client
from flows.submission import submit_media as submit_media  # the app imports it from here
from media_pipeline.enums import JobState, MediaType
from media_pipeline.errors import RunNotFound
from media_pipeline.payloads import MediaSummary
from media_pipeline.storage import parse_uuid
from tasks.table import JOB_TABLE


def get_job_status(flow_run_id: str, client: SyncPrefectClient | None = None) -> dict[str, Any]:
    """As the seed's getJobStatus (id, name, state, progress, attempts, finished time),
    plus every job of that run as the pipeline recorded it."""
    run_uuid = parse_uuid(flow_run_id, "flow run id")
    with api_client(client) as api:
        try:
            run = api.read_flow_run(run_uuid)
        except ObjectNotFound:
            raise RunNotFound(f"flow run {run_uuid} does not exist") from None
    with session_scope() as session:
        jobs = [
            {"job": row.job, "state": row.state.value, "attempts": row.attempts,
             "error": row.error}
            for row in jobs_of_run(session, flow_run_id)
        ]  # fmt: skip
    finished = [j for j in jobs if j["state"] in ("SUCCEEDED", "FAILED", "SKIPPED")]
    done = run.state is not None and run.state.is_final()
    return {
        "id": str(run.id),
        "name": run.name,
        "media_id": run.parameters.get("media_id"),
        "tier": run.parameters.get("tier"),
        "state": run.state.name if run.state else None,
        "progress": 100 if done else round(100 * len(finished) / max(1, len(jobs))),
        "attempts_made": run.run_count,
        "finished_on": run.end_time.isoformat() if run.end_time else None,
        "jobs": jobs,
    }


def get_media(media_id: str) -> MediaSummary:
    """A media's status, its jobs (state, attempts, error) and what each made."""
    media_uuid = parse_uuid(media_id, "media id")
    return transaction(lambda session: media_summary(session, media_uuid))


def get_queue_stats(client: SyncPrefectClient | None = None) -> dict[str, dict[str, Any]]:
    """The seed's getQueueStats (waiting, active, completed, failed, delayed, total) per
    priority queue, with whether it is paused and its oldest waiting run's age; ``all`` is
    their sum. From Prefect's records."""
    with api_client(client) as api:
        return queue_stats(api)


@dataclass(frozen=True)
class FailedRun:
    id: str
    name: str
    media_id: str | None
    media_type: str | None
    tier: str | None
    jobs: tuple[str, ...]  # the run's jobs that failed or never finished
    state: str
    message: str
    when: datetime | None
    permanent: bool  # every failed job said "not retried": running it again cannot help


def failed_runs(
    since: timedelta | None = None,
    flow_run_ids: list[str] | None = None,
    job: str | None = None,
    media_type: str | None = None,
    limit: int = 200,
    client: SyncPrefectClient | None = None,
) -> list[FailedRun]:
    """Failed and crashed deployment runs of the pipeline, newest first; ``job`` keeps the
    runs in which that job failed (or never finished), ``media_type`` those of IMAGE,
    AUDIO or VIDEO media."""
    if job is not None and job not in JOB_TABLE.names():
        raise ValueError(f"unknown job {job!r}: one of {', '.join(JOB_TABLE.names())}")
    filters: dict[str, Any] = {"state": state_filter(*FAILED_STATES)}
    if media_type is not None:
        if media_type.upper() not in MediaType.__members__:
            raise ValueError(f"unknown media type {media_type!r}: IMAGE, AUDIO or VIDEO")
        filters["tags"] = FlowRunFilterTags(all_=[f"type-{media_type.lower()}"])
    if since is not None:
        filters["start_time"] = FlowRunFilterStartTime(after_=datetime.now(UTC) - since)
    if flow_run_ids:
        filters["id"] = FlowRunFilterId(any_=[parse_uuid(i, "flow run id") for i in flow_run_ids])
    with api_client(client) as api:
        runs: list[FlowRun] = api.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(**filters),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
    runs = [r for r in runs if r.deployment_id is not None]  # in-process runs: no worker
    with session_scope() as session:
        unfinished = unfinished_jobs_of_runs(session, [str(r.id) for r in runs])
    found = [
        FailedRun(
            id=str(r.id),
            name=r.name,
            media_id=r.parameters.get("media_id"),
            media_type=next((t[5:].upper() for t in r.tags if t.startswith("type-")), None),
            tier=r.parameters.get("tier"),
            jobs=tuple(job for job, _ in unfinished.get(str(r.id), ())),
            state=r.state.name if r.state else "?",
            message=(r.state.message or "") if r.state else "",
            when=r.start_time,
            permanent=is_permanent(unfinished.get(str(r.id), [])),
        )
        for r in runs
    ]
    return [run for run in found if job is None or job in run.jobs]


def is_permanent(jobs: list[tuple[str, str | None]]) -> bool:
    return bool(jobs) and all("not retried" in (error or "") for _, error in jobs)


def retry_runs(runs: list[FailedRun], client: SyncPrefectClient | None = None) -> None:
    """Re-run flow runs under the same id, as the UI's Retry does: jobs that finished are
    served from Prefect's result cache, not redone."""
    with api_client(client) as api:
        for run in runs:
            api.set_flow_run_state(uuid.UUID(run.id), Scheduled(message="retry-failed"), force=True)


def retry_failed(
    flow_run_ids: list[str] | None = None,
    since: timedelta | None = None,
    job: str | None = None,
    media_type: str | None = None,
    include_permanent: bool = False,
) -> list[FailedRun]:
    """Re-run the failed and crashed runs that ``failed_runs`` finds with these filters;
    those whose every failure was permanent (a corrupt file) only with
    ``include_permanent``."""
    runs = failed_runs(since=since, flow_run_ids=flow_run_ids, job=job, media_type=media_type)
    runs = [r for r in runs if include_permanent or not r.permanent]
    retry_runs(runs)
    return runs


def retry_media(media_id: str, client: SyncPrefectClient | None = None) -> list[str]:
    """Re-run the media's failed and crashed runs (those of its FAILED jobs); their ids."""
    media_uuid = parse_uuid(media_id, "media id")
    summary = transaction(lambda session: media_summary(session, media_uuid))
    ids = sorted({j.flow_run_id for j in summary.jobs
                  if j.state is JobState.FAILED and j.flow_run_id})  # fmt: skip
    runs = failed_runs(flow_run_ids=ids, client=client) if ids else []
    retry_runs(runs, client)
    return [run.id for run in runs]
