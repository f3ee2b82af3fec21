"""A flow run and the jobs it ran: the seed's getJobStatus.

GET /api/jobs/{runId}
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from deployments.api.camel import Camel
from deployments.api.links import IngestDep
from deployments.operations.client_api import get_job_status
from media_pipeline.enums import JobState


class RunJob(Camel):
    job: str
    media_id: uuid.UUID  # a backfill's run does its job on several media
    state: JobState
    attempts: int
    error: str | None


class JobStatus(Camel):
    id: uuid.UUID
    name: str
    media_id: str | None  # as the run's parameters say (comma-separated: a backfill's)
    tier: str | None
    state: str | None
    progress: int = 0
    attempts_made: int
    finished_on: str | None
    jobs: list[RunJob]


def jobs_router() -> APIRouter:
    router = APIRouter(prefix="/api/jobs", tags=["queues"])

    @router.get("/{run_id}")
    def job_status(run_id: uuid.UUID, ingest: IngestDep) -> JobStatus:
        """The seed's getJobStatus: one flow run and the jobs it ran."""
        return JobStatus.model_validate(get_job_status(run_id, ingest.prefect))

    return router
