"""The alerts and their uploads (the seed's workflow), and an alert's erasure.

    PUT    /api/alerts/{alertId}                           {"categoryCode"?, "closedAt"?}
    POST   /api/alerts/{alertId}/media/initiate            -> media id + upload URL
    PUT    <upload URL>                                     (the store's, or the API's own)
    POST   /api/alerts/{alertId}/media/{mediaId}/complete  -> the media's flow runs
    DELETE /api/alerts/{alertId}                           -> the receipts of its media

An erased media answers 410 Gone on ``GET /api/media/{id}`` (``media_erased``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, StrictInt, model_validator

from db.erasure import set_alert_closed
from db.repository import set_alert_category
from db.session import transaction
from deployments.api.camel import Body, Camel
from deployments.api.links import IngestDep
from deployments.operations.erasure import erase_alert
from media_pipeline.enums import MediaStatus, MediaType


class AlertBody(Body):
    category_code: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,16}$")
    closed_at: datetime | None = Field(
        None,
        description="The case is closed: its media are erased after "
        "MEDIA_PIPELINE_ERASE_CLOSED_AFTER_DAYS (when set)",
    )

    @model_validator(mode="after")
    def _something(self) -> AlertBody:
        if self.category_code is None and self.closed_at is None:
            raise ValueError("give categoryCode, closedAt or both")
        if self.closed_at is not None and self.closed_at.tzinfo is None:
            raise ValueError("closedAt needs a time zone (2026-12-04T10:00:00Z)")
        return self


class AlertAnswer(Camel):
    alert_id: uuid.UUID
    created: bool | None = Field(None, description="The category created the alert")
    category_code: str | None = None
    closed_at: str | None = None


class InitiateBody(Body):
    type: str = Field(description="IMAGE, AUDIO or VIDEO")
    position: StrictInt = Field(0, ge=0, le=10_000)
    filename: str = Field(min_length=1, max_length=255, description="Kept as a label only")
    mime_type: str = Field(max_length=100)
    size: StrictInt = Field(gt=0, description="Bytes; the upload must be exactly this size")
    category_code: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,16}$",
        description="The alert's category (creates the alert); DISP and DECD photos are enhanced",
    )


class Initiated(Camel):
    media_id: uuid.UUID
    upload_url: str = Field(description="PUT the bytes here, with these headers")
    method: str = "PUT"
    headers: dict[str, str]
    expires_at: int = Field(description="Unix time after which the URL is refused")


class PlannedJob(Camel):
    job: str
    tier: str = Field(description="The priority queue its run waits in")
    run_id: str | None = Field(description="None until the relay has made the run")


class Completed(Camel):
    media_id: uuid.UUID
    type: MediaType = Field(description="As detected from the content")
    status: MediaStatus
    jobs: list[PlannedJob] = Field(description="Its planned jobs, highest tier first")
    runs: list[str] = Field(
        description="Its flow runs made so far, one per priority tier: none on the first "
        "call, as a rule (GET /api/media/{mediaId} shows them once made)"
    )


class Receipt(Camel):
    """What an erasure removed from each store, and what it still has to (``pending``)."""

    media_id: uuid.UUID
    alert_id: uuid.UUID
    type: MediaType
    enhanced_copy: bool
    erased_at: str
    finished_at: str | None
    removed: dict[str, Any]
    pending: dict[str, Any]


class AlertErased(Camel):
    alert_id: uuid.UUID
    alert_removed: bool
    media: list[Receipt]


def alerts_router() -> APIRouter:
    router = APIRouter(prefix="/api/alerts")

    @router.put("/{alert_id}", tags=["ingest"], response_model_exclude_unset=True)
    def put_alert(alert_id: uuid.UUID, body: AlertBody) -> AlertAnswer:
        """Create the alert or change its category (before its media are completed);
        close it (or reopen it with ``closedAt: null`` beside a category)."""
        answer = AlertAnswer(alert_id=alert_id)
        if body.category_code is not None:
            code = body.category_code
            answer.created = transaction(lambda s: set_alert_category(s, alert_id, code))
            answer.category_code = code.upper()
        if "closed_at" in body.model_fields_set:
            closed = body.closed_at
            transaction(lambda s: set_alert_closed(s, alert_id, closed))
            answer.closed_at = closed.isoformat() if closed else None
        return answer

    @router.post("/{alert_id}/media/initiate", status_code=201, tags=["ingest"])
    def initiate(
        alert_id: uuid.UUID, body: InitiateBody, request: Request, ingest: IngestDep
    ) -> Initiated:
        """A media awaiting its upload, and the URL to PUT its bytes to (with these headers)."""
        done = ingest.initiate(
            alert_id,
            media_type=body.type,
            mime_type=body.mime_type,
            filename=body.filename,
            size=body.size,
            position=body.position,
            category_code=body.category_code,
            api_base=str(request.base_url).rstrip("/"),
        )
        return Initiated(
            media_id=done.media_id,
            upload_url=done.upload_url,
            headers=done.headers,
            expires_at=done.expires_at,
        )

    @router.post("/{alert_id}/media/{media_id}/complete", status_code=202, tags=["ingest"])
    def complete(alert_id: uuid.UUID, media_id: uuid.UUID, ingest: IngestDep) -> Completed:
        """Check the upload and plan the media's jobs; their runs are made just after (or
        when Prefect is back). The same jobs and runs on every call."""
        media_type, status, planned = ingest.complete(alert_id, media_id)
        return Completed(
            media_id=media_id,
            type=media_type,
            status=status,
            jobs=[PlannedJob(job=p.job, tier=p.tier, run_id=p.run_id) for p in planned],
            runs=list(dict.fromkeys(p.run_id for p in planned if p.run_id)),
        )

    @router.delete("/{alert_id}", tags=["erasure"])
    def delete_alert(alert_id: uuid.UUID) -> AlertErased:
        """Erase every media of the alert, then the alert; the receipts."""
        return AlertErased.model_validate(erase_alert(alert_id))

    return router
