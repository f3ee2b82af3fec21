"""What operators see in the Prefect UI: one keyed table per media (``media-<id>``) with
what each job produced, the files as links (pictures when MEDIA_ROOT has a public URL),
and the transcript as Markdown for voice notes."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from db.repository import active_transcription
from db.session import session_scope
from media_pipeline.settings import get_settings

PICTURES = {"THUMBNAIL", "MEDIUM", "LARGE", "ENHANCED", "WAVEFORM"}


def _size(output: dict[str, Any]) -> str:
    if output.get("width") and output.get("height"):
        return f"{output['width']}x{output['height']}"
    if output.get("duration"):
        return f"{output['duration']:.1f} s"
    return ""


def publish_media_artifacts(summary: dict[str, Any]) -> None:
    rows = []
    for job in summary["jobs"]:
        for output in job["outputs"] or [{}]:
            rows.append({
                "job": job["job"], "state": job["state"], "attempts": job["attempts"],
                "output": output.get("type", ""), "size": _size(output),
                "bytes": output.get("bytes", ""), "path": output.get("path", ""),
                "error": job["error"] or "",
            })  # fmt: skip
    create_table_artifact(
        table=rows,
        key=f"media-{summary['media_id']}",
        description=f"{summary['type']} media {summary['media_id']}: {summary['status']}",
    )
    create_markdown_artifact(
        markdown=files_markdown(summary),
        key=f"files-{summary['media_id']}",
        description=f"Files of media {summary['media_id']}",
    )
    if summary["type"] == "AUDIO":
        with session_scope() as session:
            transcription = active_transcription(session, summary["media_id"])
            if transcription is None:
                return
            lines = [f"**[{s['start']:7.2f} - {s['end']:7.2f}]** {s['text']}"
                     for s in transcription.segments] or [transcription.text]  # fmt: skip
            header = (f"# Transcript v{transcription.version} ({transcription.model}, "
                      f"{transcription.language or 'language unknown'})\n\n")  # fmt: skip
        create_markdown_artifact(
            markdown=header + "\n\n".join(lines),
            key=f"transcript-{summary['media_id']}",
            description=f"Transcript of media {summary['media_id']}",
        )


def files_markdown(summary: dict[str, Any]) -> str:
    """Links to every file the jobs produced; with a public URL, the pictures themselves
    (the waveform as its SVG)."""
    settings = get_settings()
    public = settings.storage.public_media_url.rstrip("/")

    def url(key: str) -> str:
        return f"{public}/{key}" if public else (settings.media_root / key).as_uri()

    lines = [f"# Files of {summary['type'].lower()} media {summary['media_id']}", ""]
    for job in summary["jobs"]:
        for output in job["outputs"]:
            if not output.get("path"):
                continue
            label = f"{output['type']} ({_size(output) or job['job']})"
            lines.append(f"- [{label}]({url(output['path'])})")
            picture = output.get("svg") or output["path"]
            if public and output["type"] in PICTURES:
                lines.append(f"\n  ![{output['type']}]({url(picture)})")
    if len(lines) == 2:
        lines.append("No files yet.")
    return "\n".join(lines)
