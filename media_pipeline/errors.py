"""The pipeline's errors: the retry policy reads their class, people read their message.

``PermanentError`` will never succeed however often it is tried (bad input, missing
row); ``NotConfigured`` is a permanent error that makes a job SKIPPED rather than FAILED;
``TransientError`` is worth another attempt (a provider's 429 or 5xx, a timeout).
"""

from __future__ import annotations

from collections.abc import Mapping


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class PermanentError(PipelineError):
    """Retrying cannot help: the input or the request is wrong."""


class InvalidMedia(PermanentError):
    """The file is corrupt, empty, unsupported or too large to decode safely."""


class MediaNotFound(PermanentError):
    """No media row for that id."""


class MediaErased(MediaNotFound):
    """The media was erased on request: only its tombstone is left."""


class RunNotFound(PermanentError):
    """No flow run with that id on the Prefect server."""


class BackfillNotFound(PermanentError):
    """No backfill has that id."""


class InvalidId(PermanentError, ValueError):
    """An id that is not a UUID: refused before it touches a path or a query."""


class NotConfigured(PermanentError):
    """The job needs a provider that is not configured; the message names the setting."""


class TransientError(PipelineError):
    """May succeed later (rate limited, provider error, timeout)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def http_status_error(
    provider: str, status: int, headers: Mapping[str, str], message: str
) -> PermanentError | TransientError:
    """A provider's HTTP error as the pipeline sees it: retried (429, 408, 409, 5xx) or not."""
    if status in (408, 409, 429) or status >= 500:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return TransientError(f"{provider} {status}: {message}", retry_after=retry_after)
    hint = {
        401: "; check the API key",
        403: "; the key lacks access",
        413: "; the upload is too large",
    }.get(status, "")
    return PermanentError(f"{provider} {status}: {message}{hint}; not retried")


def parse_retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
