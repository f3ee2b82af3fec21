"""Probing untrusted video with FFmpeg's libraries (PyAV): streams, size, rotation, length.

Only the container header and the first video frame are read, whatever the length.
"""

from __future__ import annotations

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


def probe_video(path: Path) -> VideoInfo:
    if not path.is_file() or path.stat().st_size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty (0 bytes)")
    try:
        with av.open(str(path), options=AV_OPTIONS) as container:
            if set(container.format.name.split(",")) & REFERENCING_FORMATS:
                raise InvalidMedia(f"{path.name}: playlists are not accepted")
            streams = [
                s for s in container.streams.video
                if not s.disposition & av.stream.Disposition.attached_pic
            ]  # fmt: skip
            if not streams:
                raise InvalidMedia(f"{path.name}: the file has no video stream")
            stream = streams[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise InvalidMedia(f"{path.name}: the video stream has no frames")
            duration = _duration(container, stream)
            audio = (
                container.streams.audio[0].codec_context.name if container.streams.audio else None
            )
            return VideoInfo(
                width=first.width,
                height=first.height,
                rotation=int(getattr(first, "rotation", 0) or 0) % 360,
                duration=duration,
                codec=stream.codec_context.name,
                pixel_format=stream.codec_context.pix_fmt,
                audio_codec=audio,
                container=container.format.name,
            )
    except av.FFmpegError as exc:
        raise InvalidMedia(f"{path.name}: not a readable video ({exc.strerror})") from None


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0
