"""The HTTP API (FastAPI): the seed's upload workflow and its job-queue calls, one router
module per resource, every answer a typed model in camelCase:

- alerts and their uploads (``alerts.py``): initiate, the bytes (``links.py``: the
  store's presigned URL or the API's own), complete; an alert's category, closing and
  erasure;
- media (``media.py``): status, jobs and files, a job run again, retries, erasure;
- jobs (``jobs.py``), queues (``queues.py``), backfills (``backfills.py``).

Every call but the signed links and ``/health`` needs ``Authorization: Bearer <token>``.
OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from prefect.client.orchestration import SyncPrefectClient, get_client
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.api.alerts import alerts_router
from deployments.api.backfills import backfills_router
from deployments.api.camel import Camel
from deployments.api.errors import ApiError, error_response, install_error_handlers
from deployments.api.ingest import Ingest
from deployments.api.jobs import jobs_router
from deployments.api.links import UPLOADS, links_router
from deployments.api.media import media_router
from deployments.api.queues import queues_router
from deployments.api.security import LinkSigner, api_tokens, token_allowed
from flows.relay import Relay
from media_pipeline.object_store import get_store
from media_pipeline.settings import get_settings


class Health(Camel):
    status: str = "ok"
    worker: str | None = Field(None, description="Embedded default: ready or starting")
    instance: str | None = Field(None, description="Embedded default: its settings' digest")


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
            relay = Relay(client)
            stack.callback(relay.close)
            app.state.ingest = Ingest(settings, get_store(), app.state.signer, client, relay)
            if on_shutdown is not None:
                stack.callback(on_shutdown)
            yield

    app = FastAPI(title="media-pipeline", version="1", lifespan=lifespan, description=__doc__)
    install_error_handlers(app)
    app.state.last_request = time.monotonic()
    app.add_middleware(NoteRequests, state=app.state)

    @app.get("/health", tags=["operations"], response_model_exclude_none=True)
    def health(request: Request) -> Health:
        """``ok``; on the embedded default also whether its own worker has started."""
        if worker is None:
            return Health()
        state = request.app.state
        if not getattr(state, "worker_ready", False):
            pool = get_settings().orchestration.work_pool
            workers = state.ingest.prefect.read_workers_for_work_pool(work_pool_name=pool)
            state.worker_ready = any(w.name == worker and w.last_heartbeat_time for w in workers)
        return Health(worker="ready" if state.worker_ready else "starting", instance=instance)

    app.include_router(links_router())
    for router in (alerts_router, media_router, jobs_router, queues_router, backfills_router):
        app.include_router(router(), dependencies=[Depends(require_token)])
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
