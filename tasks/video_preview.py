"""generate-video-preview: the first 10 seconds as a web-playable MP4 (H.264 + AAC).

At most 720 px on the short side (never upscaled), upright, sound kept, ``+faststart``
so playback starts before the download ends. A short clip that is already web-playable
is copied as it is; anything else is re-encoded. Only the first seconds are read.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from media_pipeline.derivatives import Derivative
from media_pipeline.ffmpeg import input_args, run_ffmpeg
from media_pipeline.storage import atomic_outputs, derivative_name
from media_pipeline.video import VideoInfo, probe_video
from tasks.context import JobInput, JobResult

PREVIEW_SECONDS = 10.0
MAX_SHORT_SIDE = 720
# Short side at most 720 px, never upscaled, even dimensions (H.264 4:2:0 needs them).
SCALE = (
    "scale=w='if(lte(iw,ih),trunc(min(iw,720)/2)*2,-2)':"
    "h='if(lte(iw,ih),-2,trunc(min(ih,720)/2)*2)'"
)


def can_copy(info: VideoInfo) -> bool:
    """Already web-playable, upright, small enough, and short enough to need no cut."""
    return (
        info.codec == "h264"
        and info.pixel_format == "yuv420p"
        and info.audio_codec in (None, "aac")
        and "mp4" in info.container.split(",")
        and info.rotation == 0
        and min(info.width, info.height) <= MAX_SHORT_SIDE
        and 0 < info.duration <= PREVIEW_SECONDS
    )


def make_preview(source: Path, out_dir: Path, media_id: uuid.UUID) -> Derivative:
    info = probe_video(source)
    target = out_dir / derivative_name(media_id, "preview", "mp4")
    mode = "copy" if can_copy(info) else "transcode"
    codec_args = (
        ["-c", "copy"]
        if mode == "copy"
        else [
            "-vf",
            SCALE,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            "-profile:v",
            "high",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
        ]
    )
    with atomic_outputs(target) as (temp,):
        run_ffmpeg(
            [
                *input_args(source),
                "-t",
                f"{PREVIEW_SECONDS:g}",
                "-map",
                "0:v:0",
                "-map",
                "0:a:0?",
                "-sn",
                "-dn",
                "-map_metadata",
                "-1",
                *codec_args,
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(temp),
            ],
            what=f"{source.name}: video preview",
        )
        result = probe_video(temp)
        size = temp.stat().st_size
    width, height = result.display_size
    return Derivative(
        "PREVIEW",
        target,
        "video/mp4",
        size,
        width,
        height,
        round(result.duration, 3),
        extra={"mode": mode, "audio": result.audio_codec is not None},
    )


def generate_video_preview(job: JobInput) -> JobResult:
    return JobResult(derivatives=[make_preview(job.original, job.folder, job.media_id)])
