"""Decoding untrusted audio with FFmpeg's libraries (PyAV), streamed in blocks.

``pcm16_blocks`` yields interleaved 16-bit frames as numpy arrays of shape
(frames, channels), never the whole signal: memory stays flat for a 3-hour file.
Integer PCM is passed through exactly (24/32-bit are shifted down, as libsndfile
does); float formats are scaled and rounded as FFmpeg's own s16 conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from media_pipeline.detect import AV_OPTIONS
from media_pipeline.errors import InvalidMedia

BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    duration: float | None
    codec: str


@contextmanager
def open_audio(path: Path) -> Iterator[tuple[av.container.InputContainer, av.AudioStream]]:
    if path.stat().st_size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path), options=AV_OPTIONS)
    except av.FFmpegError as exc:
        raise InvalidMedia(f"{path.name}: not a readable audio file ({exc.strerror})") from None
    with container:
        if not container.streams.audio:
            raise InvalidMedia(f"{path.name}: the file has no audio stream")
        yield container, container.streams.audio[0]


def audio_info(path: Path) -> AudioInfo:
    with open_audio(path) as (container, stream):
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return AudioInfo(
            stream.codec_context.sample_rate,
            stream.codec_context.channels,
            duration,
            stream.codec_context.name,
        )


def _to_pcm16(frame: av.AudioFrame, channels: int) -> np.ndarray:
    data = frame.to_ndarray()
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    kind = frame.format.name.rstrip("p")
    if kind == "s16":
        return np.ascontiguousarray(data, dtype=np.int16)
    if kind == "s32":
        return (data >> 16).astype(np.int16)
    if kind == "u8":
        return ((data.astype(np.int16) - 128) << 8).astype(np.int16)
    if kind in ("flt", "dbl"):
        return np.clip(np.rint(data * 32768.0), -32768, 32767).astype(np.int16)
    if kind == "s64":
        return (data >> 48).astype(np.int16)
    raise InvalidMedia(f"unsupported sample format {frame.format.name}")


def pcm16_blocks(path: Path, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Decoded 16-bit frames, (frames, channels), in blocks of about ``block_frames``."""
    with open_audio(path) as (container, stream):
        channels = stream.codec_context.channels
        pending: list[np.ndarray] = []
        count = 0
        try:
            for frame in container.decode(stream):
                pcm = _to_pcm16(frame, channels)
                pending.append(pcm)
                count += len(pcm)
                if count >= block_frames:
                    yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                    pending, count = [], 0
        except av.FFmpegError as exc:
            raise InvalidMedia(f"{path.name}: corrupt audio data ({exc.strerror})") from None
        if pending:
            yield np.concatenate(pending)
