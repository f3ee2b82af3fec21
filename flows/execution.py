"""How every job runs as a Prefect task: one retry policy, one place that records attempts.

Prefect's task retries are the only retry layer: ``retry_attempts`` attempts in all,
delays doubling from ``retry_base_delay_seconds`` (2 s, then 4 s) plus a little jitter,
drawn here and only ever added (Prefect's ``retry_jitter_factor`` draws around each delay,
so it can shorten one). A ``PermanentError``
is never retried; ``NotConfigured`` ends the job SKIPPED with its reason. Faults of Prefect
or the app database are not attempts (``flows/faults.py``).
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
from flows.faults import InfrastructureFault, is_infrastructure_fault
from flows.runner import run_core
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
    """Prefect's retry condition; a plain function (a partial would disable retries).
    A fault that outlasted the wait is not retried either: a retry would be an attempt."""
    return not isinstance(state.data, PermanentError | InfrastructureFault)


def execute_job(table: JobTable, job_name: str, media_id: uuid.UUID) -> JobOutput:
    """One attempt of one job: record it, run it, and turn ``NotConfigured`` into a skip.

    A fault of Prefect or the app database (``flows/faults.py``) is not an attempt: it is
    waited out for ``fault_wait_seconds`` and the same attempt goes on (jobs are
    idempotent); beyond that, ``InfrastructureFault`` ends the run for the reconciler.
    """
    job = table.get(job_name)
    settings = get_settings()
    logger = get_run_logger()
    deadline = time.monotonic() + settings.orchestration.fault_wait_seconds
    delay, attempt = 1.0, 0
    while True:
        try:
            if not attempt:
                attempt = transaction(lambda session: mark_job_running(session, media_id, job.name))
                logger.info("media %s: %s, attempt %d", media_id, job.name, attempt)
            return run_attempt(job, media_id, attempt)
        except Exception as exc:
            if not is_infrastructure_fault(exc):
                raise
            message = settings.redact(str(exc)) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise InfrastructureFault(
                    f"{job.name} waited {settings.orchestration.fault_wait_seconds:.0f} s "
                    f"for the app database or the Prefect API: {message}"
                ) from None
            logger.warning(
                "media %s: %s waits for the database or Prefect (not an attempt, %.0f s): %s",
                media_id,
                job.name,
                delay,
                message,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def run_attempt(job: Job, media_id: uuid.UUID, attempt: int) -> JobOutput:
    """Run the job once. Errors leave with their message cleared of secrets. A provider's
    Retry-After longer than the next backoff is waited out here, so the next attempt is
    not wasted."""
    settings = get_settings()
    logger = get_run_logger()
    try:
        output = run_core(job, media_id, settings)
    except NotConfigured as exc:
        logger.warning("media %s: %s skipped: %s", media_id, job.name, exc)
        return JobOutput(skipped_reason=settings.redact(str(exc)))
    except Exception as exc:
        if is_infrastructure_fault(exc):
            raise
        message = settings.redact(str(exc)) or type(exc).__name__
        logger.error("media %s: %s attempt %d failed: %s", media_id, job.name, attempt, message)
        transaction(lambda session: note_attempt_error(session, media_id, job.name, message))
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

    def perform(job_name: str, media_id: uuid.UUID) -> JobOutput:  # the task: its attempts
        return execute_job(table, job_name, media_id)

    settings = get_settings()
    return task(
        perform,
        name=job.name,
        task_run_name=run_name,
        retries=settings.orchestration.retry_attempts - 1,
        retry_delay_seconds=retry_delays(),
        retry_condition_fn=is_retryable,
        # No tags: Prefect looks up a concurrency limit for each tag of a task run before
        # it starts, and a failed lookup (the server away) failed the job. The worker's
        # slots are the only limit; the flow runs carry the job and tier tags.
        # Persisted results let a retried flow run (same id) serve finished jobs from its
        # cache. Where: PREFECT_LOCAL_STORAGE_PATH, which set-up points at the results dir.
        # No cross-worker lock on the cache key: prefect-redis's lock never expires, so a
        # job whose worker died would block its own re-run for good. Outputs are
        # idempotent instead (files replaced atomically, rows upserted, one transcription
        # version per flow run).
        persist_result=True,
        cache_policy=DEFAULT,
    )
