"""The seed's upload workflow: initiate (a media row and an upload URL), the bytes (to the
object store's presigned URL, or streamed to the API on local storage), complete (the
stored object checked, then the media's jobs and their runs planned in one transaction).

``complete`` answers from the app database alone: it never waits for Prefect, and it
accepts uploads while Prefect is away. The process's relay (``flows/relay.py``) creates
the planned runs just after, or when Prefect is back.

Stateless: everything lives in the app database, the store and Prefect, so any number of
API replicas can serve one client's three calls.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from prefect.client.orchestration import SyncPrefectClient
from sqlalchemy.orm import Session

from db.jobs import job_rows
from db.models import Alert, Media
from db.repository import create_media, ensure_alert, load_media, mark_uploaded
from db.session import transaction
from deployments.api.errors import ApiError
from deployments.api.security import LinkSigner
from flows.relay import Relay
from flows.submission import plan_submission, runs_of_jobs
from media_pipeline.detect import DetectedMedia
from media_pipeline.enums import MediaStatus, MediaType
from media_pipeline.errors import InvalidMedia, PermanentError
from media_pipeline.object_store import LocalStore, Store
from media_pipeline.settings import Settings
from media_pipeline.storage import atomic_outputs, media_key
from media_pipeline.upload_check import HEAD_BYTES, declared_kind, inspect_upload

UPLOAD = "upload"


@dataclass(frozen=True)
class Initiated:
    media_id: uuid.UUID
    upload_url: str
    headers: dict[str, str]
    expires_at: int


@dataclass(frozen=True)
class PlannedJob:
    job: str
    tier: str
    run_id: str | None  # None until the relay has made its run


@dataclass
class Ingest:
    settings: Settings
    store: Store
    signer: LinkSigner
    prefect: SyncPrefectClient
    relay: Relay  # creates the planned runs

    def max_bytes(self, media_type: MediaType) -> int:
        api = self.settings.api
        return {
            MediaType.IMAGE: api.max_image_bytes,
            MediaType.AUDIO: api.max_audio_bytes,
            MediaType.VIDEO: api.max_video_bytes,
        }[media_type]

    def initiate(
        self,
        alert_id: uuid.UUID,
        *,
        media_type: str,
        mime_type: str,
        filename: str,
        size: int,
        position: int,
        category_code: str | None,
        api_base: str,
    ) -> Initiated:
        try:
            declared, extension = declared_kind(media_type, mime_type)
        except InvalidMedia as error:
            raise ApiError(422, "unsupported_media", str(error)) from None
        mime = mime_type.split(";")[0].strip().lower()
        if size > (limit := self.max_bytes(declared)):
            message = f"{size} bytes is over the {declared.value} limit of {limit}"
            raise ApiError(413, "too_large", message)
        media_id = uuid.uuid4()
        key = f"{media_key(alert_id, media_id)}/original.{extension}"

        def create(session: Session) -> None:
            if category_code:
                try:
                    ensure_alert(session, alert_id, category_code)
                except PermanentError as error:
                    message = f"{error}; change it with PUT /api/alerts/{alert_id}"
                    raise ApiError(409, "category_conflict", message) from None
            elif session.get(Alert, alert_id) is None:
                message = (
                    f"alert {alert_id} is unknown: send its categoryCode in this body, "
                    f"or PUT /api/alerts/{alert_id} first"
                )
                raise ApiError(404, "alert_not_found", message)
            create_media(
                session,
                media_id=media_id,
                alert_id=alert_id,
                media_type=declared,
                filename=filename,
                mime_type=mime,
                size=size,
                storage_key=key,
                position=position,
                status=MediaStatus.AWAITING_UPLOAD,
            )

        transaction(create)
        ttl = self.settings.api.upload_url_ttl_seconds
        expires = self.signer.expiry(ttl)
        url = self.store.upload_url(key, size, mime, ttl)
        headers = {"Content-Type": mime}
        if url is None:  # local storage: the API takes the bytes itself
            signature = self.signer.sign(UPLOAD, media_id, size, mime, expires=expires)
            url = (
                f"{api_base}/api/uploads/presigned/{media_id}"
                f"?expires={expires}&signature={signature}"
            )
        else:
            headers["Content-Length"] = str(size)
        return Initiated(media_id, url, headers, expires)

    def upload_target(
        self, media_id: uuid.UUID, expires: int, signature: str
    ) -> tuple[Path, Media]:
        """Where the bytes of an initiated media go (local storage), once the URL is checked."""
        if not isinstance(self.store, LocalStore):
            raise ApiError(404, "not_found", "uploads go to the object store's presigned URL")
        media = transaction(lambda session: load_media(session, media_id))
        why = self.signer.check(
            signature, UPLOAD, media.id, media.size, media.mime_type, expires=expires
        )
        if why == "invalid":
            raise ApiError(
                403, "upload_url_invalid", "this upload URL was not issued for this media"
            )
        if why == "expired":
            raise ApiError(403, "upload_url_expired", "this upload URL has expired: initiate again")
        if media.status is not MediaStatus.AWAITING_UPLOAD:
            raise ApiError(409, "already_completed", f"media {media.id} is already uploaded")
        return self.store.path(media.storage_key), media

    async def receive(self, target: Path, declared_size: int, chunks: AsyncIterator[bytes]) -> int:
        """Stream ``chunks`` to ``target`` (whole or not at all); exactly the declared size."""
        received = 0
        with atomic_outputs(target) as (temp,), temp.open("wb") as file:
            async for chunk in chunks:
                received += len(chunk)
                if received > declared_size:
                    raise ApiError(
                        413, "size_mismatch", f"more than the {declared_size} bytes declared"
                    )
                file.write(chunk)
            if received != declared_size:
                raise ApiError(
                    400, "size_mismatch", f"{received} bytes sent, {declared_size} declared"
                )
        return received

    def complete(
        self, alert_id: uuid.UUID, media_id: uuid.UUID
    ) -> tuple[MediaType, MediaStatus, list[PlannedJob]]:
        """Check the stored object of an initiated media, then plan its jobs and their runs
        (the same on every call); the relay is woken to create the runs. Two transactions:
        read, then accept and plan."""
        media = transaction(lambda session: load_media(session, media_id))
        if media.alert_id != alert_id:
            raise ApiError(404, "media_not_found", f"media {media.id} is not of alert {alert_id}")
        found = None
        if media.status is MediaStatus.AWAITING_UPLOAD:
            found = self.check_object(media)

        def accept(session: Session) -> tuple[MediaType, MediaStatus, list[PlannedJob]]:
            if found is not None:
                mark_uploaded(session, media.id, *found)
            submission = plan_submission(session, media.id)
            rows = job_rows(session, media.id)
            stored = load_media(session, media.id)  # read by planning: no query
            planned = [
                PlannedJob(j.name, j.queue, rows[j.name].flow_run_id) for j in submission.jobs
            ]
            return stored.type, stored.status, planned

        accepted = transaction(accept)
        self.relay.wake()
        return accepted

    def run_again(self, media_id: uuid.UUID, job: str) -> list[str]:
        """Run one job of the media again (new runs); their ids once the relay has made
        them, or none after ``submit_wait_seconds`` (Prefect away: made when it is back)."""
        submission = transaction(lambda session: plan_submission(session, media_id, jobs=[job]))
        self.relay.wake()
        deadline = time.monotonic() + self.settings.api.submit_wait_seconds
        while (runs := transaction(lambda s: runs_of_jobs(s, media_id, submission.jobs))) is None:
            if time.monotonic() > deadline:
                return []
            time.sleep(0.02)
        return runs

    def check_object(self, media: Media) -> tuple[MediaType, str]:
        """The stored object's kind, once its size and its bytes (on local storage, all of
        them; in an object store, its head: one request) match what was declared."""
        key = media.storage_key
        local = isinstance(self.store, LocalStore)  # its file is inspected whole, in place
        stored = self.store.read_head(key, 0 if local else HEAD_BYTES)
        if stored is None:
            raise ApiError(
                409,
                "upload_missing",
                f"nothing was uploaded for media {media.id}: PUT it to the upload URL first",
            )
        size, head = stored
        if size != media.size:
            raise ApiError(409, "size_mismatch", f"{size} bytes stored, {media.size} declared")
        try:
            detected = self.inspect(media, key, head)
        except InvalidMedia as error:
            self.store.delete(key)  # refused: the client initiates again
            raise ApiError(422, "content_mismatch", f"{error}; upload refused") from None
        return detected.type, detected.mime_type

    def inspect(self, media: Media, key: str, head: bytes) -> DetectedMedia:
        """What the stored bytes are: the whole file on local storage, else its head."""
        limit = self.settings.images.max_pixels
        if isinstance(self.store, LocalStore):
            return inspect_upload(self.store.path(key), media.type, media.mime_type, limit, True)
        with tempfile.TemporaryDirectory(prefix="media-pipeline-check-") as folder:
            sample = Path(folder) / "upload"
            sample.write_bytes(head)
            whole = len(head) >= media.size
            return inspect_upload(sample, media.type, media.mime_type, limit, whole)
