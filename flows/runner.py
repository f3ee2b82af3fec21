"""The one generic job runner: load the media, take the job's provider call slots, call
the job's core, record what it returns (derivative rows, placeholder, transcription
version, enhanced media) in one transaction."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import runtime
from sqlalchemy.orm import Session

from db.models import MediaDerivative, Transcription
from db.repository import (
    add_transcription,
    load_media,
    lock_media,
    record_derivatives,
    set_placeholder,
    transcription_of_run,
    upsert_enhanced_media,
)
from db.session import transaction
from flows.artifacts import ChunkProgress
from flows.rate_limits import acquire_call_slot
from flows.sources import MediaSource, load_source
from media_pipeline.errors import MediaErased
from media_pipeline.object_store import get_store
from media_pipeline.payloads import JobOutput, OutputRecord
from media_pipeline.settings import Settings
from media_pipeline.storage import relative_key
from tasks.context import JobInput, JobResult, transcription_cost
from tasks.table import BACKFILL_TAG, Job


def run_core(job: Job, media_id: uuid.UUID, settings: Settings) -> JobOutput:
    """The job's core once on the media (its original fetched, its files published), and
    what it made recorded."""
    source = load_source(media_id)
    flow_run_id = str(runtime.flow_run.id or "") or None
    if job.output == "transcription":  # a paid call: a re-run of this flow run reuses it
        done = transaction(lambda s: transcription_of_run(s, source.media_id, flow_run_id))
        if done is not None:
            price = settings.openai.transcription_price_per_minute
            cost = transcription_cost(done.duration or 0.0, price)
            return JobOutput(outputs=[transcription_record(done)], estimated_cost=cost)
    provider = job.provider
    backfill = BACKFILL_TAG in (runtime.flow_run.tags or [])  # uploads' calls come first
    store = get_store()
    with store.workspace([source.original_key]) as root:
        job_input = JobInput(
            media_id=source.media_id,
            type=source.type,
            category=source.category,
            is_enhanced=source.is_enhanced,
            original=root / source.original_key,
            folder=root / source.folder_key,
            settings=settings,
            before_call=lambda: acquire_call_slot(provider, backfill) if provider else 0.0,
            on_progress=ChunkProgress(source.media_id).update,
        )
        result = job.load()(job_input)
        published = store.publish(root, result.files())
        try:
            return record_result(source, result, root, flow_run_id, job.version)
        except MediaErased:  # erased while the job ran: nothing may bring its data back
            for key in published:
                store.delete(key)
            raise


def record_result(
    source: MediaSource,
    result: JobResult,
    root: Path,
    flow_run_id: str | None,
    job_version: int = 1,
) -> JobOutput:
    """Record what the core wrote under ``root`` (its files by their storage keys), made by
    version ``job_version`` of its job."""

    def record(session: Session) -> JobOutput:
        lock_media(session, source.media_id)
        load_media(session, source.media_id)  # MediaErased once erased
        rows = record_derivatives(session, source.media_id, root, result.derivatives, job_version)
        output = JobOutput(
            outputs=[derivative_record(row) for row in rows], estimated_cost=result.estimated_cost
        )
        if result.placeholder is not None:
            set_placeholder(session, source.media_id, result.placeholder)
        if (transcript := result.transcript) is not None:
            row = add_transcription(
                session,
                source.media_id,
                text=transcript.text,
                language=transcript.language,
                duration=transcript.duration,
                segments=transcript.segments,
                model=transcript.model,
                flow_run_id=flow_run_id,
                job_version=job_version,
            )
            output.outputs.append(transcription_record(row))
        if (enhanced := result.enhanced) is not None:
            key = relative_key(root, enhanced.path)
            media = upsert_enhanced_media(session, source.media_id, key, enhanced.bytes)
            output.outputs.append(
                OutputRecord(
                    type="ENHANCED",
                    media_id=media.id,
                    path=key,
                    width=enhanced.width,
                    height=enhanced.height,
                    bytes=enhanced.bytes,
                    model=enhanced.model,
                    usage=enhanced.usage,
                )
            )
            output.follow_up_media.append(media.id)
        return output

    return transaction(record)


def derivative_record(row: MediaDerivative) -> OutputRecord:
    return OutputRecord(
        type=row.type.value,
        path=row.storage_key,
        mime_type=row.mime_type,
        width=row.width,
        height=row.height,
        bytes=row.bytes,
        duration=row.duration,
        **row.extra,
    )


def transcription_record(row: Transcription) -> OutputRecord:
    return OutputRecord(
        type="TRANSCRIPTION",
        version=row.version,
        language=row.language,
        duration=row.duration,
        chars=len(row.text),
    )
