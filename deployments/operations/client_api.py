"""What the app's backend calls: submit a media, read a run's status, queue stats, retries,
erasure (``erase_media``, ``erase_alert``: the receipts).

Plain functions over the Prefect client; the CLI wraps them. They take ids as
``uuid.UUID`` or as text, parsed once here (``InvalidId`` when it is not a UUID); the
layers below take ``uuid.UUID`` only. ``submit_media`` returns at
once with one flow run per priority tier the media needs (it plans them in the outbox and
creates them itself); calling it again returns the same runs (idempotency keys), unless
``reprocess`` asks for new ones. While Prefect is away it raises, and a relay creates the
planned runs when it is back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
from deployments.operations.failures import FailedRun, failed_runs, run_media
from deployments.operations.queue_board import queue_stats
from flows import submission
from flows.run_creation import api_client
from media_pipeline.enums import JobState
from media_pipeline.errors import RunNotFound
from media_pipeline.payloads import MediaSummary
from media_pipeline.storage import parse_uuid


def submit_media(
    media_id: uuid.UUID | str,
    reprocess: bool = False,
    jobs: list[str] | None = None,
    client: SyncPrefectClient | None = None,
) -> list[str]:
    """Plan the media's jobs and create its runs (one per priority tier); their ids, the
    same ones when called again, unless ``reprocess`` asks for new ones. ``jobs`` runs
    only those jobs again (new runs)."""
    media = parse_uuid(media_id, "media id")
    return submission.submit_media(media, reprocess, jobs, client=client)


def get_job_status(
    flow_run_id: uuid.UUID | str, client: SyncPrefectClient | None = None
) -> dict[str, Any]:
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
            {
                "job": row.job,
                "media_id": str(row.media_id),
                "state": row.state.value,
                "attempts": row.attempts,
                "error": row.error,
            }
            for row in jobs_of_run(session, str(run_uuid))
        ]
    finished = [j for j in jobs if j["state"] in ("SUCCEEDED", "FAILED", "SKIPPED")]
    done = run.state is not None and run.state.is_final()
    return {
        "id": str(run.id),
        "name": run.name,
        "media_id": run_media(run),
        "tier": run.parameters.get("tier"),
        "state": run.state.name if run.state else None,
        "progress": 100 if done else round(100 * len(finished) / max(1, len(jobs))),
        "attempts_made": run.run_count,
        "finished_on": run.end_time.isoformat() if run.end_time else None,
        "jobs": jobs,
    }


def get_media(media_id: uuid.UUID | str) -> MediaSummary:
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
    flow_run_ids: Sequence[uuid.UUID | str] | None = None,
    since: timedelta | None = None,
    job: str | None = None,
    media_type: str | None = None,
    include_permanent: bool = False,
) -> list[FailedRun]:
    """Re-run the failed and crashed runs that ``failed_runs`` finds with these filters;
    those whose every failure was permanent (a corrupt file) only with
    ``include_permanent``."""
    ids = [parse_uuid(i, "flow run id") for i in flow_run_ids or ()]
    runs = failed_runs(since=since, flow_run_ids=ids, job=job, media_type=media_type)
    runs = [r for r in runs if include_permanent or not r.permanent]
    retry_runs(runs)
    return runs


def retry_media(media_id: uuid.UUID | str, client: SyncPrefectClient | None = None) -> list[str]:
    """Re-run the media's failed and crashed runs (those of its FAILED jobs); their ids."""
    media_uuid = parse_uuid(media_id, "media id")
    summary = transaction(lambda session: media_summary(session, media_uuid))
    ids = sorted(
        {
            uuid.UUID(j.flow_run_id)
            for j in summary.jobs
            if j.state is JobState.FAILED and j.flow_run_id
        }
    )
    runs = failed_runs(flow_run_ids=ids, client=client) if ids else []
    retry_runs(runs, client)
    return [run.id for run in runs]
