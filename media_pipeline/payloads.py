"""The pipeline's typed payloads: what a job made, a media's summary.

One definition for the flow, the artifacts, the client API, the CLI's ``--json`` and the
webhook body (``MediaSummary.model_json_schema()`` is the schema receivers can read).
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from media_pipeline.enums import JobState, MediaStatus, MediaType


class OutputRecord(BaseModel):
    """One thing a job made: a derivative file, a transcription version, an enhanced media.
    Derivatives may carry details of their kind (``samples_per_pixel``, ``at_seconds``...)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="THUMBNAIL, MEDIUM, LARGE, WAVEFORM, PREVIEW, TRANSCRIPTION or ENHANCED"
    )
    path: str | None = Field(None, description="Storage key, relative to the media root")
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    duration: float | None = Field(None, description="Seconds")
    version: int | None = Field(None, description="Transcription version")
    language: str | None = None
    chars: int | None = Field(None, description="Length of the transcript")
    media_id: uuid.UUID | None = Field(None, description="The enhanced media's id")
    model: str | None = None


class JobOutput(BaseModel):
    """What a job's run hands back to the flow: what it made, its cost, or why it was
    skipped; media it created that need processing of their own (an enhanced portrait)."""

    outputs: list[OutputRecord] = Field(default_factory=list)
    estimated_cost: float | None = None
    skipped_reason: str | None = None
    follow_up_media: list[uuid.UUID] = Field(default_factory=list)


class JobSummary(BaseModel):
    job: str
    state: JobState
    attempts: int
    error: str | None = None
    outputs: list[OutputRecord] = Field(default_factory=list)
    estimated_cost: float | None = None
    flow_run_id: str | None = None


class MediaSummary(BaseModel):
    """A media's status and every job's state and outputs."""

    media_id: uuid.UUID
    alert_id: uuid.UUID
    type: MediaType
    status: MediaStatus
    status_message: str | None = None
    filename: str | None = None
    placeholder: str | None = Field(None, description="BlurHash to show while loading")
    jobs: list[JobSummary] = Field(default_factory=list)
