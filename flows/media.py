"""The per-media flow: select the media's jobs, run them as concurrent task runs, record.

``make_media_flow(table)`` builds the flow for a job table, so tests can run a copy of
the table with jobs of their own; ``process_media`` is the flow for the real table.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from prefect import Flow, flow, get_run_logger, runtime
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
from media_pipeline.errors import MediaNotFound, PermanentError
from media_pipeline.payloads import JobOutput, MediaSummary
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_TAG, JOB_TABLE, JobTable


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

    # A backfill's run is shared by several media: its task runs name their media in full
    # (erasure finds a media's task runs there by name).
    backfill = BACKFILL_TAG in runtime.flow_run.tags
    label = f"{source.type.value.lower()} · {source.media_id if backfill else source.short_id}"
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
    if not backfill:  # a backfill's own artifacts tell its story
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
    return run_name(str(parameters.get("media_id", "?")), parameters.get("tier"))


def make_media_flow(table: JobTable, name: str = FLOW_NAME) -> Flow[..., Any]:
    @flow(name=name, flow_run_name=current_run_name, validate_parameters=True)
    def process_media(
        media_id: uuid.UUID, jobs: list[str] | None = None, tier: str | None = None
    ) -> State[MediaSummary]:
        """Process one media: the jobs of the job table that apply to it (all, the ``jobs``
        named, or those of one priority ``tier``: high, normal, low)."""
        follow_up = submit_follow_up if runtime.deployment.id else process_follow_up
        return run_media_jobs(media_id, jobs, table, follow_up=follow_up, tier=tier)

    def process_follow_up(created_media_id: uuid.UUID) -> object:
        """An in-process run processes the media it created here."""
        return process_media(created_media_id, return_state=True)

    return process_media


def submit_follow_up(created_media_id: uuid.UUID) -> object:
    """A deployment run hands the media it created to the deployments (their own runs, on
    their own queues, recovered like any other). A copy made again (an enhancement run
    again) gets its jobs again: new runs, the same ones for every try of this run."""
    return submit_media(created_media_id, generation=f"after-{runtime.flow_run.id}")


process_media = make_media_flow(JOB_TABLE)


@flow(name=FLOW_NAME, validate_parameters=True)
def process_media_batch(media_ids: list[uuid.UUID], jobs: list[str]) -> State[dict[str, str]]:
    """Run ``jobs`` on each media in turn: a backfill's run, which shares the Prefect
    server's cost of a flow run among several media and holds one worker slot. A media
    that fails does not stop the others; one erased meanwhile is passed over (GONE).
    Returns each media's status."""
    statuses: dict[str, str] = {}
    failures: list[str] = []
    for media_id in media_ids:
        try:
            state = run_media_jobs(media_id, jobs, follow_up=submit_follow_up)
        except MediaNotFound as gone:
            statuses[str(media_id)] = "GONE"
            get_run_logger().info("media %s passed over: %s", media_id, gone)
            continue
        except Exception as error:
            if is_infrastructure_fault(error):
                raise  # the run ends with its media owed: the reconciler runs it again
            statuses[str(media_id)] = "FAILED"
            failures.append(f"media {media_id}: {failure_message(error)}")
            continue
        statuses[str(media_id)] = state.data.status.value
        if state.is_failed():
            failures.append(state.message or f"media {media_id} failed")
    if failures:
        count = f"{len(failures)} of {len(media_ids)} media failed"
        return Failed(message=f"{count}: {'; '.join(failures)}", data=statuses)
    return Completed(message=f"{len(media_ids)} media processed", data=statuses)
