"""What the app's backend calls: submit a media, read a run's status, queue stats, retries,
erasure (``erase_media``, ``erase_alert``: the receipts).

Plain functions over the Prefect client; the CLI wraps them. ``submit_media`` returns at
once with one flow run per priority tier the media needs (it plans them in the outbox and
creates them itself); calling it again returns the same runs (idempotency keys), unless
``reprocess`` asks for new ones. While Prefect is away it raises, and a relay creates the
planned runs when it is back.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from db.jobs import jobs_of_run
from db.repository import media_summary
from db.session import session_scope, transaction
from deployments.operations.erasure import (
    erase_alert as erase_alert,  # the app imports them from here
)
from deployments.operations.erasure import erase_media as erase_media
from deployments.operations.failures import FailedRun, failed_runs
from deployments.operations.queue_board import queue_stats
from flows.run_creation import api_client
from flows.submission import submit_media as submit_media  # the app imports it from here
from media_pipeline.enums import JobState
from media_pipeline.errors import RunNotFound
from media_pipeline.payloads import MediaSummary
from media_pipeline.storage import parse_uuid


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
            {"job": row.job, "state": row.state.value, "attempts": row.attempts, "error": row.error}
            for row in jobs_of_run(session, flow_run_id)
        ]
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
    ids = sorted(
        {j.flow_run_id for j in summary.jobs if j.state is JobState.FAILED and j.flow_run_id}
    )
    runs = failed_runs(flow_run_ids=ids, client=client) if ids else []
    retry_runs(runs, client)
    return [run.id for run in runs]
