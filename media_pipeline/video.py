"""Probing untrusted video with FFmpeg's libraries (PyAV): streams, size, rotation, length.

Only the container header and the first video frame are read, whatever the length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av

from media_pipeline.detect import AV_OPTIONS, REFERENCING_FORMATS
from media_pipeline.errors import InvalidMedia


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as stored
    height: int
    rotation: int  # degrees a player turns the picture (display matrix), 0/90/180/270
    duration: float
    codec: str
    pixel_format: str | None
    audio_codec: str | None
    container: str

    @property
    def display_size(self) -> tuple[int, int]:
        turned = self.rotation % 180 == 90
        return (self.height, self.width) if turned else (self.width, self.height)


@contextmanager
def open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """The container and its first real video stream (cover art is not a video)."""
    if not path.is_file() or path.stat().st_size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty (0 bytes)")
    try:
        with av.open(str(path), options=AV_OPTIONS) as container:
            if set(container.format.name.split(",")) & REFERENCING_FORMATS:
                raise InvalidMedia(f"{path.name}: playlists are not accepted")
            streams = [
                s
                for s in container.streams.video
                if not s.disposition & av.stream.Disposition.attached_pic
            ]
            if not streams:
                raise InvalidMedia(f"{path.name}: the file has no video stream")
            yield container, streams[0]
    except av.FFmpegError as exc:
        raise InvalidMedia(f"{path.name}: not a readable video ({exc.strerror})") from None


def probe_video(path: Path) -> VideoInfo:
    with open_video(path) as (container, stream):
        first = next(container.decode(stream), None)
        if first is None:
            raise InvalidMedia(f"{path.name}: the video stream has no frames")
        audio = container.streams.audio
        return VideoInfo(
            width=first.width,
            height=first.height,
            rotation=int(getattr(first, "rotation", 0) or 0) % 360,
            duration=duration_of(container, stream),
            codec=stream.codec_context.name,
            pixel_format=stream.codec_context.pix_fmt,
            audio_codec=audio[0].codec_context.name if audio else None,
            container=container.format.name,
        )


def duration_of(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0
