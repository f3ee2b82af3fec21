"""The per-media flow: select the media's jobs, run them as concurrent task runs, record.

``make_media_flow(table)`` builds the flow for a job table, so tests can run a copy of
the table with jobs of their own; ``process_media`` is the flow for the real table.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from prefect import Flow, flow, runtime
from prefect.futures import wait
from prefect.states import Completed, Failed, State
from sqlalchemy.orm import Session

from db.jobs import fail_unfinished_jobs, finish_job, start_jobs
from db.models import JobState
from db.repository import media_summary
from db.session import transaction
from flows.artifacts import publish_media_artifacts
from flows.backfill import yield_cpu_to_uploads
from flows.execution import job_task
from flows.faults import InfrastructureFault, is_infrastructure_fault
from flows.notifications import notify_media_processed
from flows.sources import load_source
from flows.submission import FLOW_NAME, run_name, submit_media
from media_pipeline.errors import PermanentError
from media_pipeline.payloads import JobOutput, MediaSummary
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_QUEUE, BACKFILL_TAG, JOB_TABLE, JobTable


def run_media_jobs(
    media_id: uuid.UUID,
    jobs: list[str] | None = None,
    table: JobTable = JOB_TABLE,
    follow_up: Callable[[uuid.UUID], object] | None = None,
    tier: str | None = None,
) -> State[MediaSummary]:
    """Run the jobs of ``table`` that apply to the media (or the ``jobs`` named, or the
    jobs of one priority tier).

    Media created by a job (an enhanced portrait) are handed to ``follow_up``. When the
    run cannot finish, its unfinished jobs are recorded FAILED (if the database answers
    at all), so the media reaches a final status; but a fault of Prefect or the database
    in a deployment's run leaves them owed, and the reconciler schedules the run again.
    """
    flow_run_id = str(runtime.flow_run.id or "") or None
    if runtime.deployment.id:  # in a process of its own
        yield_cpu_to_uploads(runtime.flow_run.tags)
    try:
        return _run_media_jobs(media_id, jobs, table, follow_up, tier, flow_run_id)
    except Exception as error:
        recovered = runtime.deployment.id and is_infrastructure_fault(error)
        if flow_run_id is not None and not recovered:
            with contextlib.suppress(Exception):
                reason = failure_message(error)
                transaction(
                    lambda session: fail_unfinished_jobs(session, media_id, flow_run_id, reason)
                )
        raise


def _run_media_jobs(
    media_id: uuid.UUID,
    jobs: list[str] | None,
    table: JobTable,
    follow_up: Callable[[uuid.UUID], object] | None,
    tier: str | None,
    flow_run_id: str | None,
) -> State[MediaSummary]:
    source = load_source(media_id)
    categories = get_settings().gemini.enhancement_categories
    selected = table.select(source, categories, jobs, tier)
    names = [job.name for job in selected]
    transaction(lambda session: start_jobs(session, source.media_id, names, flow_run_id))

    label = f"{source.type.value.lower()} · {source.short_id}"
    futures = {
        job.name: job_task(table, job, f"{job.name} · {label}").submit(job.name, source.media_id)
        for job in selected
    }
    wait(list(futures.values()))
    results = {name: future.result(raise_on_failure=False) for name, future in futures.items()}
    for result in results.values():
        if is_infrastructure_fault(result if isinstance(result, BaseException) else None):
            raise result

    def record(session: Session) -> MediaSummary:
        for name, result in results.items():
            if isinstance(result, JobOutput):
                finish_job(
                    session,
                    source.media_id,
                    name,
                    JobState.SKIPPED if result.skipped_reason else JobState.SUCCEEDED,
                    error=result.skipped_reason,
                    outputs={
                        "derivatives": [
                            o.model_dump(mode="json", exclude_none=True) for o in result.outputs
                        ]
                    },
                    estimated_cost=result.estimated_cost,
                    job_version=None if result.skipped_reason else table.get(name).version,
                )
            else:
                finish_job(
                    session, source.media_id, name, JobState.FAILED, error=failure_message(result)
                )
        return media_summary(session, source.media_id)

    summary = transaction(record)
    if BACKFILL_TAG not in runtime.flow_run.tags:  # a backfill's own artifacts tell its story
        publish_media_artifacts(summary)
    notify_media_processed(summary, flow_run_id)
    if follow_up is not None:
        for output in results.values():
            if isinstance(output, JobOutput):
                for created in output.follow_up_media:
                    follow_up(created)

    # This run's state reflects its own jobs; the summary covers the media's other tiers too.
    failed = [j for j in summary.jobs if j.job in futures and j.state is JobState.FAILED]
    status = summary.status.value
    if failed:
        reasons = "; ".join(f"{job.job}: {job.error}" for job in failed)
        return Failed(message=f"media {source.media_id} {status}: {reasons}", data=summary)
    return Completed(message=f"media {source.media_id} {status}", data=summary)


def failure_message(error: BaseException) -> str:
    """What happened and what to do: permanent errors say so, others how to retry."""
    message = str(error) or type(error).__name__
    if isinstance(error, InfrastructureFault):
        return f"{message}; retry later with `media-pipeline retry-failed`"
    if isinstance(error, PermanentError):
        return message if "not retried" in message else f"{message}; not retried"
    attempts = get_settings().orchestration.retry_attempts
    return f"{message} (after {attempts} attempts; retry later with `media-pipeline retry-failed`)"


def current_run_name() -> str:
    parameters = runtime.flow_run.parameters
    backfill = BACKFILL_TAG in runtime.flow_run.tags
    return run_name(
        str(parameters.get("media_id", "?")),
        parameters.get("tier") or (BACKFILL_QUEUE if backfill else None),
    )


def make_media_flow(table: JobTable, name: str = FLOW_NAME) -> Flow[..., Any]:
    @flow(name=name, flow_run_name=current_run_name, validate_parameters=True)
    def process_media(
        media_id: uuid.UUID, jobs: list[str] | None = None, tier: str | None = None
    ) -> State[MediaSummary]:
        """Process one media: the jobs of the job table that apply to it (all, the ``jobs``
        named, or those of one priority ``tier``: high, normal, low)."""
        return run_media_jobs(media_id, jobs, table, follow_up=process_follow_up, tier=tier)

    def process_follow_up(created_media_id: uuid.UUID) -> object:
        """A deployment run hands new media to the deployments (their own runs, on their
        own queues, recovered like any other); an in-process run processes them here. A
        copy made again (an enhancement run again) gets its jobs again: new runs, the same
        ones for every try of this run."""
        if runtime.deployment.id:
            return submit_media(created_media_id, generation=f"after-{runtime.flow_run.id}")
        return process_media(created_media_id, return_state=True)

    return process_media


process_media = make_media_flow(JOB_TABLE)
