"""The pipeline's shared vocabulary: media types and statuses, derivative kinds, job states.

Stored as short strings (see ``db/models.py``); every layer may use them.
"""

from __future__ import annotations

import enum


class MediaType(enum.StrEnum):
    IMAGE = "IMAGE"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"


class MediaStatus(enum.StrEnum):
    AWAITING_UPLOAD = "AWAITING_UPLOAD"  # initiated through the API, bytes not confirmed
    UPLOADED = "UPLOADED"
    PROCESSING = "PROCESSING"
    READY = "READY"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


class DerivativeType(enum.StrEnum):
    THUMBNAIL = "THUMBNAIL"
    MEDIUM = "MEDIUM"
    LARGE = "LARGE"
    WAVEFORM = "WAVEFORM"
    PREVIEW = "PREVIEW"


class TranscriptionSource(enum.StrEnum):
    AUTO = "AUTO"
    MANUAL = "MANUAL"


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class BackfillStatus(enum.StrEnum):
    PENDING = "PENDING"  # created; its flow run has not started
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"  # asked to stop: submits nothing more, lets its runs finish
    CANCELLED = "CANCELLED"
    DONE = "DONE"
    FAILED = "FAILED"  # its own run could not be recovered (the reconciler gave up)


class BackfillItemState(enum.StrEnum):
    SELECTED = "SELECTED"
    SUBMITTED = "SUBMITTED"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # no longer matched, erased, or being processed by another run
