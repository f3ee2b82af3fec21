"""What an upload must be before any job runs on it: a MIME type the pipeline takes, bytes
of that kind, and no image that would expand past the pixel limit when decoded.

``declared_kind`` checks what a client declares at initiate; ``inspect_upload`` checks the
stored bytes at complete, from the first bytes of the object (``HEAD_BYTES``: enough for
an image's header, its EXIF included) or, on local storage, the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from media_pipeline.detect import DetectedMedia, detect_media
from media_pipeline.enums import MediaType
from media_pipeline.errors import InvalidMedia
from media_pipeline.imaging import open_photo

HEAD_BYTES = 256 * 1024

# The MIME types clients may declare, with the storage extension of the original.
MIME_TYPES: dict[str, tuple[MediaType, str]] = {
    "image/jpeg": (MediaType.IMAGE, "jpg"),
    "image/png": (MediaType.IMAGE, "png"),
    "image/webp": (MediaType.IMAGE, "webp"),
    "image/heic": (MediaType.IMAGE, "heic"),
    "image/heif": (MediaType.IMAGE, "heic"),
    "image/gif": (MediaType.IMAGE, "gif"),
    "audio/mpeg": (MediaType.AUDIO, "mp3"),
    "audio/mp4": (MediaType.AUDIO, "m4a"),
    "audio/x-m4a": (MediaType.AUDIO, "m4a"),
    "audio/aac": (MediaType.AUDIO, "aac"),
    "audio/wav": (MediaType.AUDIO, "wav"),
    "audio/x-wav": (MediaType.AUDIO, "wav"),
    "audio/ogg": (MediaType.AUDIO, "ogg"),
    "audio/webm": (MediaType.AUDIO, "webm"),
    "audio/flac": (MediaType.AUDIO, "flac"),
    "audio/amr": (MediaType.AUDIO, "amr"),
    "audio/3gpp": (MediaType.AUDIO, "3gp"),
    "video/mp4": (MediaType.VIDEO, "mp4"),
    "video/quicktime": (MediaType.VIDEO, "mov"),
    "video/webm": (MediaType.VIDEO, "webm"),
    "video/3gpp": (MediaType.VIDEO, "3gp"),
    "video/x-matroska": (MediaType.VIDEO, "mkv"),
}

# The container each audio or video MIME type names (``sniff``'s names): a WAV declared
# audio/mpeg would be stored as original.mp3, so it is refused.
MP4, MATROSKA = "MP4/QuickTime container", "Matroska/WebM container"
CONTAINERS: dict[str, str] = {
    "audio/mpeg": "MPEG/AAC audio", "audio/aac": "MPEG/AAC audio",
    "audio/mp4": MP4, "audio/x-m4a": MP4, "audio/3gpp": MP4,
    "video/mp4": MP4, "video/quicktime": MP4, "video/3gpp": MP4,
    "audio/wav": "WAV audio", "audio/x-wav": "WAV audio",
    "audio/ogg": "Ogg container",
    "audio/webm": MATROSKA, "video/webm": MATROSKA, "video/x-matroska": MATROSKA,
    "audio/flac": "FLAC audio", "audio/amr": "AMR audio",
}  # fmt: skip

# Containers by their first bytes: what each may hold. ISO BMFF, Matroska and Ogg carry
# audio alone (a voice note) as well as video.
_AUDIO_OR_VIDEO = {MediaType.AUDIO, MediaType.VIDEO}


def declared_kind(media_type: str, mime_type: str) -> tuple[MediaType, str]:
    """The declared type and the original's extension, or ``InvalidMedia`` saying why."""
    mime = mime_type.split(";")[0].strip().lower()
    if mime not in MIME_TYPES:
        raise InvalidMedia(
            f"mimeType {mime_type[:80]!r} is not accepted; one of {', '.join(sorted(MIME_TYPES))}"
        )
    kind, extension = MIME_TYPES[mime]
    if media_type not in MediaType.__members__:
        raise InvalidMedia(f"type {media_type[:20]!r} is not IMAGE, AUDIO or VIDEO")
    declared = MediaType(media_type)
    if declared is not kind and {declared, kind} != _AUDIO_OR_VIDEO:
        raise InvalidMedia(f"type {declared.value} does not match mimeType {mime}")
    return declared, extension


@dataclass(frozen=True)
class Sniffed:
    name: str
    types: frozenset[MediaType]


def sniff(head: bytes) -> Sniffed:
    """The container named by the file's first bytes, or ``InvalidMedia``."""
    image = frozenset({MediaType.IMAGE})
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("JPEG image", image)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("PNG image", image)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("GIF image", image)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("WebP image", image)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Sniffed("WAV audio", frozenset({MediaType.AUDIO}))
    if head[4:8] == b"ftyp":
        if head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"heim", b"heis"):
            return Sniffed("HEIF image", image)
        return Sniffed(MP4, frozenset(_AUDIO_OR_VIDEO))
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed(MATROSKA, frozenset(_AUDIO_OR_VIDEO))
    if head.startswith(b"OggS"):
        return Sniffed("Ogg container", frozenset(_AUDIO_OR_VIDEO))
    audio = frozenset({MediaType.AUDIO})
    if head.startswith(b"fLaC"):
        return Sniffed("FLAC audio", audio)
    if head.startswith(b"#!AMR"):
        return Sniffed("AMR audio", audio)
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return Sniffed("MPEG/AAC audio", audio)  # MP3 frames and ADTS share a sync word
    raise InvalidMedia("the bytes are not a recognised image, audio or video file")


def inspect_upload(
    sample: Path, declared: MediaType, mime_type: str, max_pixels: int, whole: bool
) -> DetectedMedia:
    """What the stored bytes are (``sample``: the whole file, or only its first bytes),
    checked against the declaration; ``InvalidMedia`` saying what differs."""
    with sample.open("rb") as file:
        found = sniff(file.read(64))
    if declared not in found.types:
        raise InvalidMedia(
            f"declared {declared.value} ({mime_type}), but the bytes are a {found.name}"
        )
    if declared is MediaType.IMAGE:
        return _inspect_image(sample, mime_type, max_pixels)
    if CONTAINERS.get(mime_type) != found.name:
        raise InvalidMedia(f"declared {mime_type}, but the bytes are a {found.name}")
    try:
        detected = detect_media(sample)  # the whole file, or a head that holds the index
    except InvalidMedia:
        if whole:
            raise
    else:
        if declared is MediaType.AUDIO and detected.type is MediaType.VIDEO:
            raise InvalidMedia(
                f"declared AUDIO ({mime_type}), but the file holds a video stream: declare it VIDEO"
            )
        return detected
    # A container whose index comes last: its streams are only known to the worker.
    return DetectedMedia(declared, mime_type, MIME_TYPES[mime_type][1])


def _inspect_image(sample: Path, mime_type: str, max_pixels: int) -> DetectedMedia:
    with open_photo(sample, max_pixels) as image:  # the header only: size and format
        found = Image.MIME.get((image.format or "").upper(), "")
    extension = MIME_TYPES[mime_type][1]
    if found in MIME_TYPES and MIME_TYPES[found][1] != extension:
        raise InvalidMedia(f"declared {mime_type}, but the bytes are a {image.format} image")
    return DetectedMedia(MediaType.IMAGE, mime_type, extension)
