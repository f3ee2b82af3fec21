"""generate-video-thumbnail: the frame at 2 s (the middle of a shorter video) as a JPEG.

At most 1280 px on the long side, never upscaled, upright as a player shows it
(rotation metadata applied). ffmpeg seeks on input: only one GOP is decoded.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from PIL import Image

from media_pipeline.derivatives import Derivative
from media_pipeline.errors import InvalidMedia
from media_pipeline.ffmpeg import input_args, run_ffmpeg
from media_pipeline.imaging import save_jpeg
from media_pipeline.settings import get_settings
from media_pipeline.storage import atomic_outputs, derivative_name
from media_pipeline.video import probe_video
from tasks.media_context import JobOutput, load_source, save_derivatives

FRAME_AT_SECONDS = 2.0
SCALE = "scale=w='if(gte(iw,ih),min(iw,1280),-2)':h='if(gte(iw,ih),-2,min(ih,1280))'"


def frame_time(duration: float) -> float:
    return FRAME_AT_SECONDS if duration > FRAME_AT_SECONDS + 0.05 else max(0.0, duration / 2)


def make_video_thumbnail(
    source: Path, out_dir: Path, media_id: uuid.UUID | str, quality: int = 82
) -> Derivative:
    info = probe_video(source)
    at = frame_time(info.duration)
    png = run_ffmpeg(
        [*input_args(source, seek=at), "-map", "0:v:0", "-frames:v", "1", "-vf", SCALE,
         "-f", "image2pipe", "-c:v", "png", "-"],
        what=f"{source.name}: video thumbnail",
    )  # fmt: skip
    if not png:
        raise InvalidMedia(f"{source.name}: no video frame at {at:.2f} s")
    frame = Image.open(io.BytesIO(png)).convert("RGB")
    target = out_dir / derivative_name(media_id, "thumbnail", "jpg")
    with atomic_outputs(target) as (temp,):
        save_jpeg(frame, temp, quality)
        size = temp.stat().st_size
    return Derivative(
        "THUMBNAIL", target, "image/jpeg", size, frame.width, frame.height,
        extra={"at_seconds": round(at, 3)},
    )  # fmt: skip


def generate_video_thumbnail(media_id: str) -> JobOutput:
    source = load_source(media_id)
    quality = get_settings().images.jpeg_quality
    derivative = make_video_thumbnail(source.original, source.folder, source.media_id, quality)
    return save_derivatives(source.media_id, [derivative])
