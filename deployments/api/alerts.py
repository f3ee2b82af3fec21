"""The alerts' calls of the HTTP API: an alert's category and closing, and erasure.

    PUT    /api/alerts/{alertId}   {"categoryCode"?, "closedAt"?}
    DELETE /api/media/{mediaId}    -> the receipts of the media and its enhanced copy
    DELETE /api/alerts/{alertId}   -> the receipts of every media of the alert

An erased media answers 410 Gone on ``GET /api/media/{id}`` (``media_erased``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from db.erasure import set_alert_closed
from db.repository import set_alert_category
from db.session import transaction
from deployments.operations.erasure import erase_alert, erase_media
from media_pipeline.storage import parse_uuid


class AlertBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

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


def alerts_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.put("/alerts/{alert_id}", tags=["ingest"])
    def put_alert(alert_id: str, body: AlertBody) -> dict[str, Any]:
        """Create the alert or change its category (before its media are completed);
        close it (or reopen it with ``closedAt: null`` beside a category)."""
        alert = parse_uuid(alert_id, "alert id")
        answer: dict[str, Any] = {"alertId": str(alert)}
        if body.category_code is not None:
            code = body.category_code
            answer["created"] = transaction(lambda s: set_alert_category(s, alert, code))
            answer["categoryCode"] = code.upper()
        if "closed_at" in body.model_fields_set:
            closed = body.closed_at
            transaction(lambda s: set_alert_closed(s, alert, closed))
            answer["closedAt"] = closed.isoformat() if closed else None
        return answer

    @router.delete("/media/{media_id}", tags=["erasure"])
    def delete_media(media_id: str) -> dict[str, Any]:
        """Erase the media (and its enhanced copy) from every store; the receipts."""
        return {"media": erase_media([media_id])}

    @router.delete("/alerts/{alert_id}", tags=["erasure"])
    def delete_alert(alert_id: str) -> dict[str, Any]:
        """Erase every media of the alert, then the alert; the receipts."""
        return erase_alert(alert_id)

    return router
