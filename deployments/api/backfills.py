"""The backfills' calls of the HTTP API (``deployments/operations/backfill.py`` does the work).

POST   /api/backfills          {"job", "select", "type"?, "alertId"?, "since"?, "until"?,
                                "dryRun"?}  -> 201 the backfill (200 the estimate)
GET    /api/backfills          -> the newest backfills
GET    /api/backfills/{id}     -> its status and counts
DELETE /api/backfills/{id}     -> cancelled: its runs in flight finish, no more start
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import AwareDatetime, Field

from deployments.api.camel import Body, Camel
from deployments.api.links import IngestDep
from deployments.operations.backfill import (
    cancel_backfill,
    estimate_backfill,
    get_backfill,
    list_backfills,
    start_backfill,
)


class BackfillBody(Body):
    job: str = Field(description="A job of the job table: generate-thumbnails, ...")
    select: Literal["missing", "outdated", "failed", "all"] = Field(
        description="missing: no output yet; outdated: made by an older version of the job; "
        "failed: its last run failed; all: every media it applies to"
    )
    type: Literal["IMAGE", "AUDIO", "VIDEO"] | None = None
    alert_id: uuid.UUID | None = None
    since: AwareDatetime | None = Field(None, description="Media created at or after")
    until: AwareDatetime | None = Field(None, description="Media created before")
    dry_run: bool = Field(False, description="Only count and estimate")


class Estimate(Camel):
    job: str
    job_version: int
    selection: str
    filters: dict[str, str | None]
    count: int = Field(description="Media selected")
    types: dict[str, int]
    provider: str | None
    estimated_cost: float = Field(description="USD, from the job table's prices")
    provider_calls: int
    provider_minutes: float = Field(description="How long the provider's rate limit makes it")
    pace_minutes: float = Field(
        description="How long MEDIA_PIPELINE_BACKFILL_PER_MINUTE makes it at least (0: no pace)"
    )


class Counts(Camel):
    selected: int
    submitted: int = Field(description="Runs in flight")
    done: int
    failed: int
    skipped: int
    estimated_cost: float = Field(description="USD, of the media done so far")


class BackfillView(Camel):
    id: uuid.UUID
    job: str
    job_version: int
    selection: str
    filters: dict[str, str | None]
    status: str = Field(description="PENDING, RUNNING, CANCELLING, CANCELLED, DONE, FAILED")
    message: str | None
    in_flight: int = Field(description="Its runs that may exist at once")
    flow_run_id: str | None
    created_at: datetime
    finished_at: datetime | None
    counts: Counts
    estimate: Estimate | None = None


def backfills_router() -> APIRouter:
    router = APIRouter(prefix="/api/backfills", tags=["backfills"])
    answer: dict[str, Any] = {"response_model_by_alias": True}

    @router.post("", status_code=201, response_model=BackfillView | Estimate, **answer)
    def create(body: BackfillBody, response: Response, ingest: IngestDep) -> dict[str, Any]:
        """Start a backfill (201), or with ``dryRun`` only estimate it (200)."""
        filters = {
            "media_type": body.type,
            "alert_id": body.alert_id,
            "since": body.since,
            "until": body.until,
        }
        if body.dry_run:
            response.status_code = 200
            return estimate_backfill(body.job, body.select, **filters)
        return start_backfill(body.job, body.select, ingest.prefect, **filters)

    @router.get("", response_model=list[BackfillView], **answer)
    def newest() -> list[dict[str, Any]]:
        """The newest backfills, unfinished first."""
        return list_backfills()

    @router.get("/{backfill_id}", response_model=BackfillView, **answer)
    def read(backfill_id: uuid.UUID) -> dict[str, Any]:
        """Its status and counts: selected, submitted, done, failed, skipped, cost so far."""
        return get_backfill(backfill_id)

    @router.delete("/{backfill_id}", status_code=202, response_model=BackfillView, **answer)
    def cancel(backfill_id: uuid.UUID, ingest: IngestDep) -> dict[str, Any]:
        """Cancel: its runs in flight finish, its other media are skipped."""
        return cancel_backfill(backfill_id, ingest.prefect)

    return router
