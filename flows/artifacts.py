"""What operators see in the Prefect UI: one keyed table per media (``media-<id>``) with
what each job produced, the files as links (pictures when the store has a public URL),
and the transcript as Markdown for voice notes."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from db.repository import active_transcription
from db.session import transaction
from media_pipeline.enums import MediaType
from media_pipeline.object_store import get_store
from media_pipeline.payloads import MediaSummary, OutputRecord
from media_pipeline.settings import get_settings

PICTURES = {"THUMBNAIL", "MEDIUM", "LARGE", "ENHANCED", "WAVEFORM"}


def _size(output: OutputRecord) -> str:
    if output.width and output.height:
        return f"{output.width}x{output.height}"
    if output.duration:
        return f"{output.duration:.1f} s"
    return ""


def publish_media_artifacts(summary: MediaSummary) -> None:
    """The media table (the reason of a failure first, then what each job made), its
    files, and for voice notes the transcript."""
    rows = []
    for job in summary.jobs:
        for output in job.outputs or [OutputRecord(type="")]:
            rows.append(
                {
                    "error": job.error or "",
                    "job": job.job,
                    "state": job.state.value,
                    "attempts": job.attempts,
                    "output": output.type,
                    "size": _size(output),
                    "bytes": output.bytes or "",
                    "path": output.path or "",
                }
            )
    create_table_artifact(
        table=rows,
        key=f"media-{summary.media_id}",
        description=f"{summary.type.value} media {summary.media_id} (alert "
        f"{summary.alert_id}): {summary.status.value}",
    )
    create_markdown_artifact(
        markdown=files_markdown(summary),
        key=f"files-{summary.media_id}",
        description=f"Files of media {summary.media_id}",
    )
    if summary.type is MediaType.AUDIO:
        transcription = transaction(lambda s: active_transcription(s, summary.media_id))
        if transcription is None:
            return
        lines = [
            f"**[{s['start']:7.2f} - {s['end']:7.2f}]** {inert(s['text'])}"
            for s in transcription.segments
        ] or [inert(transcription.text)]
        header = (
            f"# Transcript v{transcription.version} ({inert(transcription.model or '')}, "
            f"{inert(transcription.language or 'language unknown')})\n\n"
        )
        # No key: the server keeps an event of every keyed artifact, its data included,
        # and no API deletes events; a transcript must be erasable
        # (deployments/operations/erasure.py).
        create_markdown_artifact(
            markdown=header + "\n\n".join(lines),
            description=f"transcript-{summary.media_id}: transcript of media {summary.media_id}",
        )


MARKUP = str.maketrans(
    {c: "\\" + c for c in "\\`*_[]#!|~{}"}
    | {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": " ", "\r": " "}
)


def inert(text: str) -> str:
    """``text`` (what a voice note said, a provider's word) as plain text in Markdown: no
    link, picture, HTML tag, heading or emphasis of its own survives."""
    return text.translate(MARKUP)


def files_markdown(summary: MediaSummary) -> str:
    """Links to every file the jobs produced; with a public URL, the pictures themselves
    (the waveform as its SVG)."""
    public = get_settings().storage.public_media_url.rstrip("/")
    store = get_store()

    def url(key: str) -> str:
        return f"{public}/{key}" if public else store.describe(key)

    lines = [
        f"# Files of {summary.type.value.lower()} media {summary.media_id}",
        f"Alert {summary.alert_id} (the file's name stays out of Prefect: its events "
        "keep a copy of every keyed artifact, which no API deletes)",
        "",
    ]
    for job in summary.jobs:
        for output in job.outputs:
            if not output.path:
                continue
            label = f"{output.type} ({_size(output) or job.job})"
            lines.append(f"- [{label}]({url(output.path)})")
            picture = getattr(output, "svg", None) or output.path
            if public and output.type in PICTURES:
                lines.append(f"\n  ![{output.type}]({url(picture)})")
    if len(lines) == 3:
        lines.append("No files yet.")
    return "\n".join(lines)


class ChunkProgress:
    """A progress artifact in the UI while long audio is transcribed chunk by chunk."""

    def __init__(self, media_id: uuid.UUID) -> None:
        self.media_id = media_id
        self.artifact_id: Any = None

    def update(self, done: int, total: int) -> None:
        if total < 2:
            return
        progress = 100 * done / total
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(
                progress=progress,
                key=f"transcription-{self.media_id}",
                description=f"Transcription of media {self.media_id}: chunk {done} of {total}",
            )
        else:
            update_progress_artifact(self.artifact_id, progress=progress)
