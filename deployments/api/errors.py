"""Every refusal of the HTTP API as ``{"error": {"code", "message"}}`` with its status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from media_pipeline.errors import (
    BackfillNotFound,
    InvalidId,
    InvalidMedia,
    MediaErased,
    MediaNotFound,
    PermanentError,
    RunNotFound,
    TransientError,
)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


def error_response(
    status: int, code: str, message: str, retry_after: int | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers or None)


# The pipeline's own errors, by class (the first match wins).
PIPELINE_ERRORS: list[tuple[type[Exception], int, str]] = [
    (InvalidId, 422, "invalid_id"),
    (MediaErased, 410, "media_erased"),
    (MediaNotFound, 404, "media_not_found"),
    (RunNotFound, 404, "run_not_found"),
    (BackfillNotFound, 404, "backfill_not_found"),
    (InvalidMedia, 422, "invalid_media"),
    (PermanentError, 422, "refused"),
    (TransientError, 503, "unavailable"),
]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.retry_after)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        if ids := [e for e in error.errors() if e["type"].startswith("uuid_")]:
            return error_response(422, "invalid_id", "; ".join(map(not_a_uuid, ids)))
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
            for e in error.errors()
        )
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail))

    for cls, status, code in PIPELINE_ERRORS:
        app.add_exception_handler(cls, _pipeline_handler(status, code))


def not_a_uuid(error: Any) -> str:
    """``media id 'x' is not a UUID``: as ``parse_uuid`` says it, from pydantic's error."""
    name = str(error["loc"][-1]).removesuffix("_id").removesuffix("Id").replace("_", " ")
    label = f"{name} id" if name not in ("", "id") else "id"
    return f"{label} {str(error['input'])[:80]!r} is not a UUID"


def _pipeline_handler(status: int, code: str):  # type: ignore[no-untyped-def]
    async def handle(_: Request, error: Exception) -> JSONResponse:
        return error_response(status, code, str(error))

    return handle
