"""A media's flow runs on the deployments: one per priority tier it needs, planned with its
jobs and created by a relay (``flows/relay.py``) from the outbox (``db/outbox.py``).

Idempotent, also under concurrency: the job rows and the outbox rows are planned under the
media's row lock, and each tier's run has an idempotency key, so every caller gets the same
run ids. The planned rows record their run, so a run lost before it starts is found from
the media's side too (see ``deployments/operations/reconciler.py``).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from sqlalchemy.orm import Session

from db.jobs import job_rows, plan_jobs, waits_for_run
from db.models import JobState
from db.outbox import enqueue_run
from db.session import transaction
from flows.relay import relay_pass
from flows.run_creation import RunRefused, RunRequest, api_client, run_request
from flows.sources import MediaSource, read_source
from media_pipeline.errors import PermanentError, PipelineError
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_QUEUE, BACKFILL_TAG, JOB_TABLE, Job, tiers

FLOW_NAME = "process-media"


def deployment_name(tier: str) -> str:
    """``process-media/<pool>-<tier>``: each work pool has deployments of its own (as
    ``prefect.yaml`` names them), so two pools on one server never take each other's."""
    return f"{FLOW_NAME}/{get_settings().orchestration.work_pool}-{tier}"


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
    session: Session,
    media_id: uuid.UUID,
    reprocess: bool = False,
    jobs: list[str] | None = None,
    generation: str | None = None,
) -> Submission:
    """Plan the media's jobs (PENDING rows) and write the runs that do them to the outbox,
    in the caller's transaction; ``generation`` reprocesses under that key (the same runs
    whoever asks with it)."""
    source = read_source(session, media_id)
    wanted = JOB_TABLE.select(source, get_settings().gemini.enhancement_categories, jobs)
    if jobs is not None:
        if not wanted:
            raise PermanentError(
                f"{', '.join(jobs)} does not apply to {source.type.value} media "
                f"{source.media_id} (alert category {source.category})"
            )
        reprocess = True
    reprocess = reprocess or generation is not None
    plan_jobs(session, source.media_id, [job.name for job in wanted], reset=reprocess)
    generation = generation or (uuid.uuid4().hex[:8] if reprocess else "first")
    submission = Submission(source, wanted, generation, named=jobs is not None)
    enqueue_runs(session, submission)
    return submission


def queues_of(submission: Submission) -> dict[str, list[str]]:
    """Queue -> the names of the planned jobs its run does: one run per priority tier."""
    lanes = sorted({job.queue for job in submission.jobs}, key=tiers().index)
    return {lane: [job.name for job in submission.jobs if job.queue == lane] for lane in lanes}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a submission, and the planned jobs it does."""

    request: RunRequest
    jobs: list[str]


def planned_runs(submission: Submission) -> list[PlannedRun]:
    """One flow run per tier of the planned jobs (the same runs for the same submission)."""
    source = submission.source
    planned: list[PlannedRun] = []
    for lane, names in queues_of(submission).items():
        parameters: dict[str, Any] = {"media_id": str(source.media_id), "tier": lane}
        if submission.named:
            parameters["jobs"] = names
        # Named and tagged at creation, so that a run waiting in a queue can be found by
        # its media, its alert or its jobs in the UI's search.
        request = run_request(
            deployment_name(lane),
            parameters=parameters,
            name=run_name(str(source.media_id), lane),
            idempotency_key=f"{source.media_id}:{lane}:{submission.generation}",
            tags=[*source_tags(source), f"tier-{lane}", *(f"job-{name}" for name in names)],
        )
        planned.append(PlannedRun(request, names))
    return planned


def source_tags(source: MediaSource) -> list[str]:
    return [
        f"media-{source.media_id}",
        f"alert-{source.alert_id}",
        f"type-{source.type.value.lower()}",
        f"category-{source.category.lower()}",
    ]


def backfill_run_request(
    backfill_id: uuid.UUID, job: Job, claimed: Sequence[uuid.UUID], sources: Sequence[MediaSource]
) -> RunRequest:
    """A backfill's run of ``job`` over the ``sources`` among the media ``claimed`` for it,
    on the backfill queue, made once whoever asks: its idempotency key names the backfill
    and the claimed media (a media erased since it was claimed leaves the run made before
    the same). Tagged with each media (the UI's search, erasure) and the backfill."""
    media_ids = [str(source.media_id) for source in sources]
    digest = hashlib.sha256(" ".join(map(str, claimed)).encode()).hexdigest()[:16]
    tags = dict.fromkeys(tag for source in sources for tag in source_tags(source))
    return run_request(
        deployment_name(BACKFILL_QUEUE),
        parameters={"media_ids": media_ids, "jobs": [job.name]},
        name=f"backfill · {str(backfill_id)[:8]} · {job.name} · {len(media_ids)} media",
        idempotency_key=f"backfill-{backfill_id}:{digest}",
        tags=[
            *tags,
            f"tier-{BACKFILL_QUEUE}",
            f"job-{job.name}",
            BACKFILL_TAG,
            f"backfill-{backfill_id}",
        ],
    )


def enqueue_runs(session: Session, submission: Submission) -> None:
    """Write the runs of the submission's jobs that have none yet to the outbox, in the
    transaction that planned them."""
    media_id = submission.source.media_id
    rows = job_rows(session, media_id)
    waiting = {name for name, row in rows.items() if waits_for_run(row)}
    for run in planned_runs(submission):
        if waiting & set(run.jobs):
            enqueue_run(session, media_id, run.request.deployment, run.request.body, run.jobs)


def runs_of_jobs(session: Session, media_id: uuid.UUID, jobs: list[Job]) -> list[str] | None:
    """The runs doing ``jobs`` (once each, in tier order), or None while one still waits
    for its run; ``RunRefused`` when Prefect refused one."""
    rows = job_rows(session, media_id)
    ordered = sorted(jobs, key=lambda job: tiers().index(job.queue))
    mine = [rows[job.name] for job in ordered if job.name in rows]
    if any(waits_for_run(row) for row in mine):
        return None
    for row in mine:
        if row.state is JobState.FAILED and row.flow_run_id is None:
            raise RunRefused(row.error or f"no run was made for {row.job}")
    return list(dict.fromkeys(row.flow_run_id for row in mine if row.flow_run_id))


def submit_media(
    media_id: uuid.UUID,
    reprocess: bool = False,
    jobs: list[str] | None = None,
    generation: str | None = None,
    client: SyncPrefectClient | None = None,
) -> list[str]:
    """Plan the media's jobs and their runs (one per priority tier), create the runs at
    once and return their ids.

    Calling it again returns the same runs, unless ``reprocess`` asks for new ones (or a
    new ``generation``: the same runs for the same one). ``jobs`` runs only those jobs
    again (new runs; a new transcription version, say). The runs go through the outbox:
    this call relays its own media's rows itself, so no relay needs to run; while Prefect
    is away it raises, and the planned runs are created by a relay when Prefect is back.
    """
    submission = transaction(
        lambda session: plan_submission(session, media_id, reprocess, jobs, generation)
    )
    media = submission.source.media_id
    deadline = time.monotonic() + get_settings().orchestration.relay_lease_seconds
    with api_client(client) as prefect:
        while (runs := transaction(lambda s: runs_of_jobs(s, media, submission.jobs))) is None:
            if relay_pass(prefect, media) == 0:  # another relay holds them: wait for it
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"the runs of media {media} are planned but another relay has not "
                        "created them yet; they will be"
                    )
                time.sleep(0.05)
    return runs
