"""Creating a media's flow runs on the deployments: one per priority tier it needs.

Idempotent, also under concurrency: the job rows are planned under the media's row lock,
and each tier's run has an idempotency key, so every caller gets the same run ids. The
planned rows record their run, so a run lost before it starts is found from the media's
side too (see ``deployments/reconciler.py``).
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled
from sqlalchemy.orm import Session

from db.jobs import assign_runs, plan_jobs
from db.session import transaction
from flows.sources import MediaSource, read_source
from media_pipeline.errors import PermanentError
from media_pipeline.settings import get_settings
from tasks.table import JOB_TABLE, Job, tiers

FLOW_NAME = "process-media"


def deployment_name(tier: str) -> str:
    return f"{FLOW_NAME}/media-{tier}"


def run_name(media_id: str, tier: str | None) -> str:
    """``media · <8 characters of the media id> · <tier>``, at creation and at start."""
    return f"media · {media_id[:8]} · {tier or 'all'}"


@dataclass(frozen=True)
class Submission:
    """A media's planned jobs, waiting for their flow runs."""

    source: MediaSource
    jobs: list[Job]
    generation: str  # part of the runs' idempotency keys
    named: bool  # only the jobs asked for (their runs say which)


def plan_submission(
    session: Session, media_id: object, reprocess: bool = False, jobs: list[str] | None = None
) -> Submission:
    """Plan the media's jobs (PENDING rows) in the caller's transaction."""
    source = read_source(session, media_id)
    wanted = JOB_TABLE.select(source, get_settings().gemini.enhancement_categories, jobs)
    if jobs is not None:
        if not wanted:
            raise PermanentError(
                f"{', '.join(jobs)} does not apply to {source.type.value} media "
                f"{source.media_id} (alert category {source.category})"
            )
        reprocess = True
    plan_jobs(session, source.media_id, [job.name for job in wanted], reset=reprocess)
    generation = uuid.uuid4().hex[:8] if reprocess else "first"
    return Submission(source, wanted, generation, named=jobs is not None)


def create_runs(submission: Submission, client: SyncPrefectClient | None = None) -> dict[str, str]:
    """One flow run per tier of the planned jobs (the same runs for the same submission);
    job name -> flow run id."""
    source = submission.source
    runs: dict[str, str] = {}
    with api_client(client) as api:
        for tier in sorted({job.queue for job in submission.jobs}, key=tiers().index):
            names = [job.name for job in submission.jobs if job.queue == tier]
            parameters: dict[str, Any] = {"media_id": str(source.media_id), "tier": tier}
            if submission.named:
                parameters["jobs"] = names
            # Named and tagged at creation, so that a run waiting in a queue can be found
            # by its media, its alert or its jobs in the UI's search.
            run = create_run(
                api,
                deployment_name(tier),
                parameters=parameters,
                name=run_name(str(source.media_id), tier),
                idempotency_key=f"{source.media_id}:{tier}:{submission.generation}",
                tags=[
                    f"media-{source.media_id}",
                    f"alert-{source.alert_id}",
                    f"type-{source.type.value.lower()}",
                    f"category-{source.category.lower()}",
                    f"tier-{tier}",
                    *(f"job-{name}" for name in names),
                ],
            )
            runs.update(dict.fromkeys(names, str(run.id)))
    return runs


def submit_media(
    media_id: str,
    reprocess: bool = False,
    client: SyncPrefectClient | None = None,
    jobs: list[str] | None = None,
) -> list[str]:
    """Create the media's flow runs (one per priority tier) and return their ids at once.

    Calling it again returns the same runs, unless ``reprocess`` asks for new ones.
    ``jobs`` runs only those jobs again (new runs; a new transcription version, say). A
    long-lived caller (the HTTP API) passes its open ``client``.
    """
    submission = transaction(lambda session: plan_submission(session, media_id, reprocess, jobs))
    runs = create_runs(submission, client)
    transaction(lambda session: assign_runs(session, submission.source.media_id, runs))
    return list(dict.fromkeys(runs.values()))


def api_client(
    client: SyncPrefectClient | None,
) -> contextlib.AbstractContextManager[SyncPrefectClient]:
    """``client`` when the caller keeps one open, else a new one for the block."""
    return contextlib.nullcontext(client) if client else get_client(sync_client=True)


# Deployment ids by (API URL, name): read once per process, so that a submission costs one
# request per tier.
_deployment_ids: dict[tuple[str, str], uuid.UUID] = {}


def create_run(client: SyncPrefectClient, deployment: str, **fields: Any) -> FlowRun:
    """A Scheduled run of ``deployment`` (``flow/deployment``) with ``fields``."""
    cache_key = (str(client.api_url), deployment)

    def create() -> FlowRun:
        if cache_key not in _deployment_ids:
            _deployment_ids[cache_key] = client.read_deployment_by_name(deployment).id
        return client.create_flow_run_from_deployment(
            _deployment_ids[cache_key], state=Scheduled(), **fields
        )

    try:
        return create()
    except ObjectNotFound:  # deployed again under a new id: look it up once more
        _deployment_ids.pop(cache_key, None)
        return create()
