"""How every job runs as a Prefect task: one retry policy, one place that records attempts.

Prefect's task retries are the only retry layer: ``retry_attempts`` attempts in all,
delays doubling from ``retry_base_delay_seconds`` (2 s, then 4 s) plus a little jitter,
drawn here and only ever added (Prefect's ``retry_jitter_factor`` draws around each delay,
so it can shorten one). A ``PermanentError``
is never retried; ``NotConfigured`` ends the job SKIPPED with its reason.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import DEFAULT
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from db.jobs import mark_job_running, note_attempt_error
from db.session import transaction
from flows.runner import run_job
from media_pipeline.errors import NotConfigured, PermanentError, TransientError
from media_pipeline.payloads import JobOutput
from media_pipeline.settings import get_settings
from tasks.table import Job, JobTable


def retry_delays() -> list[float]:
    """Delays before attempts 2, 3, ...: exponential, each with its own jitter."""
    policy = get_settings().orchestration
    return [
        policy.retry_base_delay_seconds * 2**n + random.uniform(0, policy.retry_jitter_seconds)
        for n in range(policy.retry_attempts - 1)
    ]


def is_retryable(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition; a plain function (a partial would disable retries)."""
    return not isinstance(state.data, PermanentError)


def execute_job(table: JobTable, job_name: str, media_id: str) -> JobOutput:
    """One attempt of one job: record it, run it, and turn ``NotConfigured`` into a skip.

    Errors leave with their message cleared of secrets. A provider's Retry-After longer
    than the next backoff is waited out here, so the next attempt is not wasted.
    """
    job = table.get(job_name)
    media_uuid = uuid.UUID(media_id)
    settings = get_settings()
    logger = get_run_logger()
    attempt = transaction(lambda session: mark_job_running(session, media_uuid, job.name))
    logger.info("media %s: %s, attempt %d", media_id, job.name, attempt)
    try:
        output = run_job(job, media_uuid, settings)
    except NotConfigured as exc:
        logger.warning("media %s: %s skipped: %s", media_id, job.name, exc)
        return JobOutput(skipped_reason=settings.redact(str(exc)))
    except Exception as exc:
        message = settings.redact(str(exc)) or type(exc).__name__
        logger.error("media %s: %s attempt %d failed: %s", media_id, job.name, attempt, message)
        transaction(lambda session: note_attempt_error(session, media_uuid, job.name, message))
        if isinstance(exc, TransientError):
            wait_out_retry_after(exc.retry_after, attempt)
        if message != str(exc):  # a secret was in the message: never let it travel
            cleaned = type(exc) if isinstance(exc, PermanentError) else TransientError
            raise cleaned(message) from None
        raise
    kinds = ", ".join(o.type for o in output.outputs) or "no files"
    logger.info("media %s: %s done (%s)", media_id, job.name, kinds)
    return output


def wait_out_retry_after(retry_after: float | None, attempt: int) -> None:
    """Sleep the part of a provider's Retry-After that the next backoff does not cover."""
    policy = get_settings().orchestration
    if retry_after is None or attempt >= policy.retry_attempts:
        return
    next_backoff = policy.retry_base_delay_seconds * 2 ** (attempt - 1)
    extra = min(retry_after, policy.retry_after_cap_seconds) - next_backoff
    if extra > 0:
        time.sleep(extra)


def job_task(table: JobTable, job: Job, run_name: str) -> Task[..., JobOutput]:
    """The Prefect task for ``job``, with the retry policy and a readable run name."""

    def run_job(job_name: str, media_id: str) -> JobOutput:
        return execute_job(table, job_name, media_id)

    settings = get_settings()
    return task(
        run_job,
        name=job.name,
        task_run_name=run_name,
        retries=settings.orchestration.retry_attempts - 1,
        retry_delay_seconds=retry_delays(),
        retry_condition_fn=is_retryable,
        tags=[f"priority-{job.queue}", f"job-{job.name}"],
        # Persisted results let a retried flow run (same id) serve finished jobs from its
        # cache. Where: PREFECT_LOCAL_STORAGE_PATH, which set-up points at the results dir.
        # No cross-worker lock on the cache key: prefect-redis's lock never expires, so a
        # job whose worker died would block its own re-run for good. Outputs are
        # idempotent instead (files replaced atomically, rows upserted, one transcription
        # version per flow run).
        persist_result=True,
        cache_policy=DEFAULT,
    )
