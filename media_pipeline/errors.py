"""The pipeline's errors: the retry policy reads their class, people read their message.

``PermanentError`` will never succeed however often it is tried (bad input, missing
row); ``NotConfigured`` is a permanent error that makes a job SKIPPED rather than FAILED;
``TransientError`` is worth another attempt (a provider's 429 or 5xx, a timeout).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class PermanentError(PipelineError):
    """Retrying cannot help: the input or the request is wrong."""


class InvalidMedia(PermanentError):
    """The file is corrupt, empty, unsupported or too large to decode safely."""


class MediaNotFound(PermanentError):
    """No media row for that id."""


class InvalidId(PermanentError, ValueError):
    """An id that is not a UUID: refused before it touches a path or a query."""


class NotConfigured(PermanentError):
    """The job needs a provider that is not configured; the message names the setting."""


class TransientError(PipelineError):
    """May succeed later (rate limited, provider error, timeout)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
