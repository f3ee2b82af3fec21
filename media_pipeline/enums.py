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
