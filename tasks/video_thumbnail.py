"""generate-video-thumbnail: the frame at 2 s (the middle of a shorter video) as a JPEG.

At most 1280 px on the long side, never upscaled, upright as a player shows it
(rotation metadata applied). The container is opened once with FFmpeg's libraries
(PyAV, local files only), seeked to the keyframe before the target and decoded forward
to it: the work is one GOP at most, whatever the video's length.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import av
from PIL import Image

from media_pipeline.derivatives import Derivative
from media_pipeline.errors import InvalidMedia
from media_pipeline.imaging import fit_inside, resample, save_jpeg
from media_pipeline.storage import atomic_outputs, derivative_name
from media_pipeline.video import duration_of, open_video
from tasks.context import JobInput, JobResult

FRAME_AT_SECONDS = 2.0
MAX_SIDE = 1280
MAX_FRAMES_DECODED = 1200  # a GOP longer than this is not a phone video: refuse, never hang
_ROTATE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def frame_time(duration: float) -> float:
    return FRAME_AT_SECONDS if duration > FRAME_AT_SECONDS + 0.05 else max(0.0, duration / 2)


def middle_frame(source: Path) -> tuple[Image.Image, float]:
    """The upright picture shown at 2 s (or mid-way), and that time, from one open."""
    with open_video(source) as (container, stream):
        seconds = frame_time(duration_of(container, stream))
        stream.thread_type = "AUTO"
        try:
            if seconds > 0:
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
            chosen = None
            for count, frame in enumerate(container.decode(stream)):
                if frame.time is not None and frame.time > seconds + 1e-3 and chosen is not None:
                    break
                chosen = frame
                if count >= MAX_FRAMES_DECODED:
                    raise InvalidMedia(f"{source.name}: no frame within {count} frames of the seek")
        except av.FFmpegError as exc:
            raise InvalidMedia(f"{source.name}: corrupt video data ({exc.strerror})") from None
        if chosen is None:
            raise InvalidMedia(f"{source.name}: no video frame at {seconds:.2f} s")
        picture = chosen.to_image()
        turn = _ROTATE.get(int(chosen.rotation or 0) % 360)
    return (picture.transpose(turn) if turn else picture), seconds


def make_video_thumbnail(
    source: Path, out_dir: Path, media_id: uuid.UUID, quality: int = 82
) -> Derivative:
    picture, at = middle_frame(source)
    picture = resample(picture, fit_inside(picture.size, (MAX_SIDE, MAX_SIDE)))
    target = out_dir / derivative_name(media_id, "thumbnail", "jpg")
    with atomic_outputs(target) as (temp,):
        save_jpeg(picture, temp, quality)
        size_bytes = temp.stat().st_size
    return Derivative(
        "THUMBNAIL",
        target,
        "image/jpeg",
        size_bytes,
        picture.width,
        picture.height,
        extra={"at_seconds": round(at, 3)},
    )


def generate_video_thumbnail(job: JobInput) -> JobResult:
    quality = job.settings.images.jpeg_quality
    return JobResult(
        derivatives=[make_video_thumbnail(job.original, job.folder, job.media_id, quality)]
    )
