"""The API's own signed links (local storage): the upload URL that ``initiate`` hands out
and the download links of ``GET /api/media/{id}``. No bearer token: the link is the key."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import Field
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from deployments.api.camel import Camel
from deployments.api.errors import ApiError
from deployments.api.ingest import Ingest
from media_pipeline.object_store import LocalStore

DOWNLOAD = "download"
UPLOADS = "/api/uploads/presigned/"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
logger = logging.getLogger(__name__)


def ingest_of(request: Request) -> Ingest:
    return request.app.state.ingest  # type: ignore[no-any-return]


IngestDep = Annotated[Ingest, Depends(ingest_of)]


class Uploaded(Camel):
    media_id: uuid.UUID
    size: int = Field(description="Bytes received: the declared size")


def links_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["links"])

    @router.put(UPLOADS.removeprefix("/api") + "{media_id}")
    async def upload(
        media_id: uuid.UUID,
        request: Request,
        ingest: IngestDep,
        expires: Annotated[int, Query()],
        signature: Annotated[str, Query(max_length=128)],
    ) -> Uploaded:
        """The bytes of an initiated media: the raw body (Content-Type as declared) or a
        multipart form with one file (``curl -F file=@photo.jpg``); streamed to disk."""
        target, media = ingest.upload_target(media_id, expires, signature)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = int(request.headers.get("content-length") or 0)
        if kind == "multipart/form-data":
            if length > media.size + MULTIPART_OVERHEAD:
                raise ApiError(413, "size_mismatch", f"more than the {media.size} bytes declared")
            chunks = multipart_file(request, media.size + MULTIPART_OVERHEAD)
        elif kind in (media.mime_type, ""):
            chunks = request.stream()
        else:
            raise ApiError(
                403,
                "content_type_mismatch",
                f"this upload URL is for {media.mime_type}, not {kind}",
            )
        try:
            size = await ingest.receive(target, media.size, chunks)
        except ClientDisconnect:  # nothing kept; one line, not a traceback
            logger.warning("upload of media %s aborted by the client", media.id)
            raise ApiError(400, "upload_aborted", "the client went away mid-upload") from None
        return Uploaded(media_id=media.id, size=size)

    @router.get("/files/{key:path}")
    def download(
        key: str,
        request: Request,
        expires: Annotated[int, Query()],
        signature: Annotated[str, Query(max_length=128)],
    ) -> FileResponse:
        """An original or derivative, by a link from ``GET /api/media/{id}``."""
        why = request.app.state.signer.check(signature, DOWNLOAD, key, expires=expires)
        if why is not None:
            raise ApiError(403, f"link_{why}", f"this link is {why}")
        store = ingest_of(request).store
        if not isinstance(store, LocalStore) or store.size(key) is None:
            raise ApiError(404, "not_found", "no such file")
        # Served as stored, never sniffed into something else (HTML appended to a JPEG).
        return FileResponse(store.path(key), headers={"X-Content-Type-Options": "nosniff"})

    return router


async def multipart_file(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The first file of a multipart body, read in parts (at most ``limit`` bytes read)."""

    async def limited() -> AsyncIterator[bytes]:
        read = 0
        async for chunk in request.stream():
            read += len(chunk)
            if read > limit:
                raise ApiError(413, "size_mismatch", "the upload is larger than declared")
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as error:  # no boundary, two files, too many fields...
        raise ApiError(400, "invalid_multipart", f"invalid multipart body: {error}") from None
    try:
        upload = next((v for _, v in form.multi_items() if not isinstance(v, str)), None)
        if upload is None:
            raise ApiError(400, "no_file", "the form has no file part")
        while chunk := await upload.read(1024 * 1024):
            yield chunk
    finally:
        await form.close()
