"""The HTTP API (FastAPI): the seed's upload workflow and its job-queue calls.

    POST /api/alerts/{alertId}/media/initiate            -> media id + upload URL
    PUT  <upload URL>                                     (the store's, or the API's own)
    POST /api/alerts/{alertId}/media/{mediaId}/complete  -> the media's flow runs

then ``GET /api/media/{id}``, ``GET /api/jobs/{runId}``, ``GET /api/queues/stats``, ``POST
/api/media/{id}/jobs/{job}``, ``POST /api/media/{id}/retry``, and the alerts' and erasure
calls (``PUT /api/alerts/{id}``, ``DELETE /api/media/{id}``, ``DELETE /api/alerts/{id}``:
``deployments/api/alerts.py``), backfills (``/api/backfills``: ``deployments/api/backfills.py``);
the API's own signed links are in ``deployments/api/links.py``.
Every call but the signed links and ``/health`` needs ``Authorization: Bearer <token>``.
OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from prefect.client.orchestration import SyncPrefectClient, get_client
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from pydantic.alias_generators import to_camel
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from db.repository import active_transcription, load_media, media_summary
from db.session import transaction
from deployments.api.alerts import alerts_router
from deployments.api.backfills import backfills_router
from deployments.api.errors import ApiError, error_response, install_error_handlers
from deployments.api.ingest import Ingest
from deployments.api.links import DOWNLOAD, UPLOADS, IngestDep, ingest_of, links_router
from deployments.api.security import LinkSigner, api_tokens, token_allowed
from deployments.operations.client_api import get_job_status, get_queue_stats, retry_media
from flows.submission import RunBatcher, submit_media
from media_pipeline.enums import MediaStatus
from media_pipeline.object_store import get_store
from media_pipeline.settings import get_settings
from media_pipeline.storage import parse_uuid


class Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class InitiateBody(Camel):
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


def create_app(
    prefect: SyncPrefectClient | None = None,
    on_shutdown: Callable[[], object] | None = None,
    worker: str | None = None,
    instance: str | None = None,
) -> FastAPI:
    """The API, submitting through ``prefect`` (an open client; else one it opens);
    ``worker`` names the worker it runs itself on the embedded default, ``instance`` the
    local instance it serves there (``/health`` says both)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = get_settings()
        with contextlib.ExitStack() as stack:
            client = prefect or stack.enter_context(get_client(sync_client=True))
            app.state.tokens = api_tokens(settings)
            app.state.signer = LinkSigner(settings)
            batcher = RunBatcher(client)
            stack.callback(batcher.close)
            app.state.ingest = Ingest(settings, get_store(), app.state.signer, client, batcher)
            if on_shutdown is not None:
                stack.callback(on_shutdown)
            yield

    app = FastAPI(title="media-pipeline", version="1", lifespan=lifespan, description=__doc__)
    install_error_handlers(app)
    app.state.last_request = time.monotonic()
    app.add_middleware(NoteRequests, state=app.state)

    @app.get("/health", tags=["operations"])
    def health(request: Request) -> dict[str, str]:
        """``ok``; on the embedded default also whether its own worker has started."""
        if worker is None:
            return {"status": "ok"}
        state = request.app.state
        if not getattr(state, "worker_ready", False):
            pool = get_settings().orchestration.work_pool
            workers = state.ingest.prefect.read_workers_for_work_pool(work_pool_name=pool)
            state.worker_ready = any(w.name == worker and w.last_heartbeat_time for w in workers)
        answer = {"status": "ok", "worker": "ready" if state.worker_ready else "starting"}
        return answer | ({"instance": instance} if instance else {})

    app.include_router(links_router())
    app.include_router(api_router())
    app.include_router(alerts_router(), dependencies=[Depends(require_token)])
    app.include_router(backfills_router(), dependencies=[Depends(require_token)])
    return app


class NoteRequests:
    """Records when the last request came (``media-pipeline api --idle-exit``), and refuses
    a body over ``max_body_bytes`` before reading it, but on upload links (whose limit is
    the declared size)."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.last_request = time.monotonic()
        if scope["type"] == "http" and not scope["path"].startswith(UPLOADS):
            limit = get_settings().api.max_body_bytes
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > limit:
                answer = error_response(413, "body_too_large", f"a body is at most {limit} bytes")
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def require_token(request: Request) -> None:
    if not token_allowed(request.headers.get("authorization"), request.app.state.tokens):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    @router.post("/alerts/{alert_id}/media/initiate", status_code=201, tags=["ingest"])
    def initiate(
        alert_id: str, body: InitiateBody, request: Request, ingest: IngestDep
    ) -> dict[str, Any]:
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
        return {
            "mediaId": done.media_id,
            "uploadUrl": done.upload_url,
            "method": "PUT",
            "headers": done.headers,
            "expiresAt": done.expires_at,
        }

    @router.post("/alerts/{alert_id}/media/{media_id}/complete", status_code=202, tags=["ingest"])
    def complete(alert_id: str, media_id: str, ingest: IngestDep) -> dict[str, Any]:
        """Check the upload and submit the media's jobs; the same runs on every call."""
        media_type, status, runs = ingest.complete(alert_id, media_id)
        return {"mediaId": media_id, "type": media_type.value, "status": status.value, "runs": runs}

    @router.get("/media/{media_id}", tags=["media"])
    def get_media(media_id: str, request: Request) -> dict[str, Any]:
        """Status, jobs (state, attempts, error), derivatives with links, transcript."""
        link = linker(request)
        return camel(transaction(lambda session: media_view(session, media_id, link)))

    @router.post("/media/{media_id}/jobs/{job}", status_code=202, tags=["media"])
    def run_job_again(media_id: str, job: str, ingest: IngestDep) -> dict[str, Any]:
        """Run one job of the media again (a new transcription version, say)."""
        runs = submit_media(
            str(parse_uuid(media_id, "media id")), jobs=[job], create=ingest.create_runs
        )
        return {"mediaId": media_id, "job": job, "runs": runs}

    @router.post("/media/{media_id}/retry", status_code=202, tags=["media"])
    def retry(media_id: str, ingest: IngestDep) -> dict[str, Any]:
        """Re-run the media's failed runs under their ids (finished jobs are not redone)."""
        runs = retry_media(media_id, ingest.prefect)
        if not runs:
            raise ApiError(409, "nothing_to_retry", f"media {media_id} has no failed run")
        return {"mediaId": media_id, "runs": runs}

    @router.get("/jobs/{run_id}", tags=["queues"])
    def job_status(run_id: str, ingest: IngestDep) -> dict[str, Any]:
        """The seed's getJobStatus: one flow run and the jobs it ran."""
        return camel(get_job_status(run_id, ingest.prefect))

    @router.get("/queues/stats", tags=["queues"])
    def queue_stats(ingest: IngestDep) -> dict[str, Any]:
        """The seed's getQueueStats, per priority queue and ``all``."""
        return camel(get_queue_stats(ingest.prefect))

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


def camel(value: Any) -> Any:
    """JSON with camelCase keys, as the seed's API (``media_id`` -> ``mediaId``)."""
    if isinstance(value, dict):
        return {to_camel(k) if "_" in k and "-" not in k else k: camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def media_view(session: Session, media_id: str, link: Callable[[str], str]) -> dict[str, Any]:
    summary = media_summary(session, media_id)
    media = load_media(session, media_id)
    uploaded = media.status is not MediaStatus.AWAITING_UPLOAD
    transcription = active_transcription(session, media.id)
    return {
        **summary.model_dump(mode="json"),
        "original": {
            "mimeType": media.mime_type,
            "bytes": media.size,
            "url": link(media.storage_key) if uploaded else None,
        },
        "derivatives": [
            {
                "type": row.type.value,
                "mimeType": row.mime_type,
                "width": row.width,
                "height": row.height,
                "bytes": row.bytes,
                "duration": row.duration,
                "url": link(row.storage_key),
            }
            for row in media.derivatives
        ],
        "transcription": None
        if transcription is None
        else {
            "version": transcription.version,
            "language": transcription.language,
            "text": transcription.text,
            "duration": transcription.duration,
        },
    }
