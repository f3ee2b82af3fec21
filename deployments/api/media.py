"""A media: its status, jobs and files; one of its jobs run again; its failed runs
retried; its erasure.

    GET    /api/media/{mediaId}              -> status, jobs, original, derivatives, transcript
    POST   /api/media/{mediaId}/jobs/{job}   -> the new runs (a new transcription version)
    POST   /api/media/{mediaId}/retry        -> its failed runs, under their ids
    DELETE /api/media/{mediaId}              -> the receipts of the media and its enhanced copy
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import Field
from sqlalchemy.orm import Session

from db.repository import active_transcription, load_media, media_summary
from db.session import transaction
from deployments.api.alerts import Receipt
from deployments.api.camel import Camel, Open
from deployments.api.errors import ApiError
from deployments.api.links import DOWNLOAD, IngestDep, ingest_of
from deployments.operations.client_api import retry_media
from deployments.operations.erasure import erase_media
from media_pipeline.enums import MediaStatus
from media_pipeline.payloads import JobSummary, MediaSummary, OutputRecord
from media_pipeline.settings import get_settings


class Output(Open, OutputRecord):
    """One thing a job made (a derivative, a transcription version, an enhanced media)."""


class Job(Camel, JobSummary):
    outputs: list[Output] = Field(default_factory=list)


class Original(Camel):
    mime_type: str
    bytes: int
    url: str | None = Field(description="None until the upload is complete")


class Derivative(Camel):
    type: str
    mime_type: str
    width: int | None
    height: int | None
    bytes: int
    duration: float | None
    url: str


class ActiveTranscription(Camel):
    version: int
    language: str | None
    text: str
    duration: float | None


class MediaView(Camel, MediaSummary):
    """The media's summary (the payload's), with its files' links and its transcript."""

    jobs: list[Job] = Field(default_factory=list)
    original: Original
    derivatives: list[Derivative]
    transcription: ActiveTranscription | None


class JobRunAgain(Camel):
    media_id: uuid.UUID
    job: str
    runs: list[str] = Field(description="Empty while Prefect is away: made when it is back")


class Retried(Camel):
    media_id: uuid.UUID
    runs: list[str]


class MediaErased(Camel):
    media: list[Receipt] = Field(description="The media's, then its enhanced copy's")


def media_router() -> APIRouter:
    router = APIRouter(prefix="/api/media")

    @router.get("/{media_id}", tags=["media"])
    def get_media(media_id: uuid.UUID, request: Request) -> MediaView:
        """Status, jobs (state, attempts, error), derivatives with links, transcript."""
        link = linker(request)
        return transaction(lambda session: media_view(session, media_id, link))

    @router.post("/{media_id}/jobs/{job}", status_code=202, tags=["media"])
    def run_job_again(media_id: uuid.UUID, job: str, ingest: IngestDep) -> JobRunAgain:
        """Run one job of the media again (a new transcription version, say)."""
        return JobRunAgain(media_id=media_id, job=job, runs=ingest.run_again(media_id, job))

    @router.post("/{media_id}/retry", status_code=202, tags=["media"])
    def retry(media_id: uuid.UUID, ingest: IngestDep) -> Retried:
        """Re-run the media's failed runs under their ids (finished jobs are not redone)."""
        runs = retry_media(media_id, ingest.prefect)
        if not runs:
            raise ApiError(409, "nothing_to_retry", f"media {media_id} has no failed run")
        return Retried(media_id=media_id, runs=runs)

    @router.delete("/{media_id}", tags=["erasure"])
    def delete_media(media_id: uuid.UUID) -> MediaErased:
        """Erase the media (and its enhanced copy) from every store; the receipts."""
        return MediaErased.model_validate({"media": erase_media([media_id])})

    return router


def linker(request: Request) -> Callable[[str], str]:
    """How the app reaches a stored file: the public URL, the store's presigned GET, or
    the API's own signed link; each but the first with a TTL."""
    settings = get_settings()
    public = settings.storage.public_media_url.rstrip("/")
    ttl = settings.storage.download_url_ttl_seconds
    ingest = ingest_of(request)
    base = str(request.base_url).rstrip("/")

    def link(key: str) -> str:
        if public:
            return f"{public}/{key}"
        if (url := ingest.store.download_url(key, ttl)) is not None:
            return url
        expires = ingest.signer.expiry(ttl)
        signature = ingest.signer.sign(DOWNLOAD, key, expires=expires)
        return f"{base}/api/files/{key}?expires={expires}&signature={signature}"

    return link


def media_view(session: Session, media_id: uuid.UUID, link: Callable[[str], str]) -> MediaView:
    summary = media_summary(session, media_id)
    media = load_media(session, media_id)
    uploaded = media.status is not MediaStatus.AWAITING_UPLOAD
    transcription = active_transcription(session, media.id)
    return MediaView.model_validate(
        {
            **summary.model_dump(mode="json"),
            "original": Original(
                mime_type=media.mime_type,
                bytes=media.size,
                url=link(media.storage_key) if uploaded else None,
            ),
            "derivatives": [
                Derivative(
                    type=row.type.value,
                    mime_type=row.mime_type,
                    width=row.width,
                    height=row.height,
                    bytes=row.bytes,
                    duration=row.duration,
                    url=link(row.storage_key),
                )
                for row in media.derivatives
            ],
            "transcription": None
            if transcription is None
            else ActiveTranscription(
                version=transcription.version,
                language=transcription.language,
                text=transcription.text,
                duration=transcription.duration,
            ),
        }
    )
