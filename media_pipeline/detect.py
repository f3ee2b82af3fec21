"""Media type detection from a file's content, never from its name.

Pillow identifies images from their header; anything else is probed by FFmpeg's
demuxers (PyAV) with network protocols disabled. A container whose only streams are
audio (an M4A, an audio-only MP4 or WebM voice note) is AUDIO; cover art attached to
an audio file does not make it a video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image

from media_pipeline.enums import MediaType
from media_pipeline.errors import InvalidMedia
from media_pipeline.imaging import prepare_imaging

# Local files only: a crafted playlist must not make a demuxer open a URL.
AV_OPTIONS = {"protocol_whitelist": "file"}
# Demuxers that read other files or URLs named inside the input.
REFERENCING_FORMATS = {"hls", "concat", "dash", "tee", "ffconcat"}

_AV_MIME = {
    "mp3": ("audio/mpeg", "mp3"),
    "wav": ("audio/wav", "wav"),
    "flac": ("audio/flac", "flac"),
    "ogg": ("audio/ogg", "ogg"),
    "amr": ("audio/amr", "amr"),
    "aac": ("audio/aac", "aac"),
    "matroska": ("video/x-matroska", "mkv"),
    "webm": ("video/webm", "webm"),
    "mp4": ("video/mp4", "mp4"),
    "mov": ("video/quicktime", "mov"),
    "3gp": ("video/3gpp", "3gp"),
    "avi": ("video/x-msvideo", "avi"),
}


@dataclass(frozen=True)
class DetectedMedia:
    type: MediaType
    mime_type: str
    extension: str


def detect_media(path: Path) -> DetectedMedia:
    """The media type, MIME type and a file extension for ``path``, or ``InvalidMedia``."""
    if not path.is_file():
        raise InvalidMedia(f"{path.name}: not a file")
    if path.stat().st_size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty (0 bytes)")
    image = _detect_image(path)
    if image is not None:
        return image
    return _detect_audio_video(path)


def _detect_image(path: Path) -> DetectedMedia | None:
    prepare_imaging()  # HEIF/HEIC photos are recognised too
    try:
        with Image.open(path) as image:
            fmt = image.format or ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    mime = Image.MIME.get(fmt.upper(), f"image/{fmt.lower()}")
    extension = {"JPEG": "jpg", "TIFF": "tif", "HEIF": "heic"}.get(fmt.upper(), fmt.lower())
    return DetectedMedia(MediaType.IMAGE, mime, extension)


def _detect_audio_video(path: Path) -> DetectedMedia:
    try:
        with av.open(str(path), options=AV_OPTIONS) as container:
            names = set(container.format.name.split(","))
            if names & REFERENCING_FORMATS:
                raise InvalidMedia(
                    f"{path.name}: {container.format.name} playlists are not accepted"
                )
            if container.format.name.endswith("_pipe") or "image2" in names:
                raise _unrecognised(path, "an image Pillow cannot read")
            has_video = any(
                not (s.disposition & av.stream.Disposition.attached_pic)
                for s in container.streams.video
            )
            has_audio = bool(container.streams.audio)
    except av.FFmpegError as exc:
        raise _unrecognised(path, exc.strerror) from None
    if not has_video and not has_audio:
        raise InvalidMedia(f"{path.name}: the file has no audio or video stream")
    media_type = MediaType.VIDEO if has_video else MediaType.AUDIO
    mime, extension = _container_mime(names, media_type)
    return DetectedMedia(media_type, mime, extension)


def _unrecognised(path: Path, detail: str | None) -> InvalidMedia:
    return InvalidMedia(f"{path.name}: not a recognised image, audio or video file ({detail})")


def _container_mime(names: set[str], media_type: MediaType) -> tuple[str, str]:
    if media_type is MediaType.AUDIO and names & {"mp4", "mov", "m4a"}:
        return "audio/mp4", "m4a"
    if media_type is MediaType.AUDIO and "webm" in names:
        return "audio/webm", "webm"
    for name in ("mp4", "webm", "mov", "mp3", "wav", "flac", "ogg", "amr", "aac", "3gp", "avi"):
        if name in names:
            return _AV_MIME[name]
    if "matroska" in names:
        return _AV_MIME["matroska"]
    kind = "video" if media_type is MediaType.VIDEO else "audio"
    return f"{kind}/octet-stream", "bin"
