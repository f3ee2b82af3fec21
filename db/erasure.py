"""Erasure in the app database: a media's rows go, a tombstone stays.

The tombstone is written in the same transaction that deletes the rows, under the media's
lock: a run of the media that records afterwards finds it erased and throws its outputs
away (``flows/runner.py``). What other stores still hold (the object store, Prefect's
database and results) is listed in the tombstone's ``pending`` until it is cleared.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import (
    Alert,
    Media,
    MediaDerivative,
    MediaErasure,
    ProcessingJob,
    Transcription,
    utcnow,
)
from db.repository import load_media, lock_media
from media_pipeline.errors import MediaErased, MediaNotFound
from media_pipeline.storage import media_key

STORES = ("store", "prefect")  # cleared after the rows (deployments/operations/erasure.py)


def erase_rows(session: Session, media_id: uuid.UUID) -> list[MediaErasure]:
    """Delete the media's rows and those of its enhanced copy, leave a tombstone for each
    (the copy's first), and return them. Erased already: the tombstones as they are."""
    try:
        media = load_media(session, media_id)
    except MediaErased:
        return tombstones_of(session, media_id)
    lock_media(session, media.id)
    copies = session.scalars(select(Media).where(Media.source_media_id == media.id)).all()
    erased = [_erase(session, item) for item in copies]
    return [*erased, _erase(session, media, copies=[str(c.id) for c in copies])]


def tombstones_of(session: Session, media_id: uuid.UUID) -> list[MediaErasure]:
    """The media's tombstone, after those of the copies erased with it."""
    erased = session.get(MediaErasure, media_id)
    if erased is None:
        return []
    copies = [session.get(MediaErasure, uuid.UUID(c)) for c in erased.keys.get("copies", [])]
    return [*(c for c in copies if c is not None), erased]


def _erase(session: Session, media: Media, copies: Sequence[str] = ()) -> MediaErasure:
    if media.is_enhanced:  # its files sit in its source's folder: one by one
        objects = [media.storage_key, *(d.storage_key for d in media.derivatives)]
        keys: dict[str, Any] = {"objects": objects}
    else:
        keys = {"prefix": media_key(media.alert_id, media.id) + "/", "copies": list(copies)}
    # The runs that served it, also those that carry no media tag (run in a command).
    keys["runs"] = sorted(
        {
            r
            for model in (ProcessingJob, Transcription)
            for r in session.scalars(select(model.flow_run_id).where(model.media_id == media.id))
            if r
        }
    )
    counts = {
        "transcriptions": _delete(session, Transcription, media.id),
        "derivatives": _delete(session, MediaDerivative, media.id),
        "jobs": _delete(session, ProcessingJob, media.id),
    }
    tombstone = MediaErasure(
        media_id=media.id,
        alert_id=media.alert_id,
        type=media.type,
        is_enhanced=media.is_enhanced,
        erased_at=utcnow(),
        keys=keys,
        receipt={"database": {"media": 1, **counts}},
        pending=dict.fromkeys(STORES, "to do"),
    )
    session.add(tombstone)
    session.execute(delete(Media).where(Media.id == media.id))
    session.flush()
    return tombstone


def _delete(session: Session, model: type[Any], media_id: uuid.UUID) -> int:
    return int(session.execute(delete(model).where(model.media_id == media_id)).rowcount or 0)


def erase_alert_if_empty(session: Session, alert_id: uuid.UUID) -> bool:
    """Delete the alert row once its last media is gone."""
    left = session.scalar(select(func.count()).where(Media.alert_id == alert_id))
    if left:
        return False
    return bool(session.execute(delete(Alert).where(Alert.id == alert_id)).rowcount)


def alert_media(session: Session, alert_id: uuid.UUID) -> list[uuid.UUID]:
    """The alert's own media (enhanced copies go with their source), and those erased
    before, so that erasing an alert again answers with every receipt."""
    live = session.scalars(
        select(Media.id).where(Media.alert_id == alert_id, Media.is_enhanced.is_(False))
    )
    erased = session.scalars(
        select(MediaErasure.media_id).where(
            MediaErasure.alert_id == alert_id, MediaErasure.is_enhanced.is_(False)
        )
    )
    return list(dict.fromkeys([*live, *erased]))


def unfinished_erasures(
    session: Session, erased_before: datetime, limit: int = 100
) -> Sequence[MediaErasure]:
    """Erasures with stores still pending, older than ``erased_before`` (a younger one is
    most likely still being finished by the call that began it)."""
    return session.scalars(
        select(MediaErasure)
        .where(MediaErasure.finished_at.is_(None), MediaErasure.erased_at < erased_before)
        .order_by(MediaErasure.erased_at)
        .limit(limit)
    ).all()


def lock_erasure(session: Session, media_id: uuid.UUID) -> None:
    """Wait for, then hold until the transaction ends, the right to finish this erasure
    (PostgreSQL advisory lock: two finishers would count the same objects twice). SQLite
    serves one machine, where the reconciler leaves young erasures to their caller."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"erasure:{media_id}"))))


def record_step(
    session: Session,
    media_id: uuid.UUID,
    store: str,
    counts: dict[str, Any] | None,
    why_not: str | None,
) -> MediaErasure:
    """A store cleared (its counts added to the receipt), or not yet (why)."""
    tombstone = session.get(MediaErasure, media_id)
    assert tombstone is not None
    pending, receipt = dict(tombstone.pending), dict(tombstone.receipt)
    if why_not is None:
        pending.pop(store, None)
        receipt[store] = counts or {}
    else:
        pending[store] = why_not
    tombstone.pending, tombstone.receipt = pending, receipt
    if not pending and tombstone.finished_at is None:
        tombstone.finished_at = utcnow()
    session.flush()
    return tombstone


def is_erased(session: Session, media_id: uuid.UUID) -> bool:
    return session.get(MediaErasure, media_id) is not None


def set_alert_closed(session: Session, alert_id: uuid.UUID, closed_at: datetime | None) -> None:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise MediaNotFound(f"alert {alert_id} does not exist")
    alert.closed_at = closed_at


def alerts_closed_before(session: Session, moment: datetime) -> Sequence[uuid.UUID]:
    return session.scalars(select(Alert.id).where(Alert.closed_at < moment)).all()
