"""generate-waveform: peaks in BBC audiowaveform's JSON format (version 2), and an SVG.

The peaks reproduce audiowaveform's arithmetic: frames are summed over channels and
divided by the channel count, truncating toward zero (unless channels are kept apart);
min and max per block of ``samples_per_pixel`` frames, the last partial block included;
for 8 bits each 16-bit value is divided by 256, truncating toward zero. The signal is
decoded and reduced block by block: memory does not grow with the file's length.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media_pipeline.audio import audio_info, pcm16_blocks
from media_pipeline.derivatives import Derivative
from media_pipeline.storage import atomic_outputs, derivative_name
from tasks.context import JobInput, JobResult


@dataclass(frozen=True)
class Peaks:
    sample_rate: int
    samples_per_pixel: int
    bits: int
    channels: int
    data: np.ndarray  # (length, channels, 2): min and max per pixel and channel
    frames: int

    @property
    def length(self) -> int:
        return int(self.data.shape[0])

    def to_json(self) -> str:
        """audiowaveform's JSON, field for field (peaks.js / waveform-data.js read it)."""
        document = {
            "version": 2,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "samples_per_pixel": self.samples_per_pixel,
            "bits": self.bits,
            "length": self.length,
            "data": self.data.reshape(-1).tolist(),
        }
        return json.dumps(document, separators=(",", ":"))


def _trunc_div(values: np.ndarray, divisor: int) -> np.ndarray:
    """Integer division truncating toward zero, as C++ does."""
    quotient = np.abs(values) // divisor
    return np.where(values < 0, -quotient, quotient)


def compute_peaks(
    source: Path,
    samples_per_pixel: int = 256,
    bits: int = 8,
    split_channels: bool = False,
    pixels_per_second: int | None = None,
) -> Peaks:
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    info = audio_info(source)
    if pixels_per_second is not None:
        samples_per_pixel = info.sample_rate // pixels_per_second
    if samples_per_pixel < 2:
        raise ValueError("samples_per_pixel must be at least 2")
    out_channels = info.channels if split_channels else 1
    pieces: list[np.ndarray] = []
    carry = np.empty((0, out_channels), dtype=np.int32)
    frames = 0
    for block in pcm16_blocks(source, block_frames=max(1 << 16, samples_per_pixel)):
        frames += len(block)
        if split_channels or info.channels == 1:
            samples = block.astype(np.int32)
        else:
            samples = _trunc_div(block.sum(axis=1, dtype=np.int32), info.channels)[:, None]
        if len(carry):
            samples = np.concatenate([carry, samples])
        whole = len(samples) // samples_per_pixel * samples_per_pixel
        if whole:
            pieces.append(_min_max(samples[:whole], samples_per_pixel))
        carry = samples[whole:]
    if len(carry):
        pieces.append(_min_max(carry, len(carry)))
    data = np.concatenate(pieces) if pieces else np.empty((0, out_channels, 2), dtype=np.int32)
    if bits == 8:
        data = _trunc_div(data, 256)
    return Peaks(info.sample_rate, samples_per_pixel, bits, out_channels, data, frames)


def _min_max(samples: np.ndarray, block: int) -> np.ndarray:
    shaped = samples.reshape(-1, block, samples.shape[1])
    return np.stack([shaped.min(axis=1), shaped.max(axis=1)], axis=-1)


def render_svg(peaks: Peaks, width: int = 1000, height: int = 120) -> str:
    """A centred waveform picture: one vertical bar per column, min to max."""
    full_scale = 128 if peaks.bits == 8 else 32768
    mono = peaks.data.min(axis=1)[:, 0], peaks.data.max(axis=1)[:, 1]
    columns = max(1, min(width, peaks.length))
    edges = np.linspace(0, peaks.length, columns + 1).astype(int)
    middle = height / 2
    strokes = []
    for column in range(columns):
        start, stop = edges[column], max(edges[column] + 1, edges[column + 1])
        if start >= peaks.length:
            break
        low = int(mono[0][start:stop].min())
        high = int(mono[1][start:stop].max())
        top = middle - high / full_scale * middle
        bottom = middle - low / full_scale * middle
        x = (column + 0.5) * width / columns
        strokes.append(f"M{x:.1f} {top:.1f}V{max(bottom, top + 0.5):.1f}")
    bar = max(1.0, width / columns * 0.8)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" preserveAspectRatio="none">'
        f'<rect width="100%" height="100%" fill="#f8fafc"/>'
        f'<line x1="0" y1="{middle}" x2="{width}" y2="{middle}" stroke="#cbd5e1"/>'
        f'<path d="{"".join(strokes)}" stroke="#2563eb" stroke-width="{bar:.2f}" fill="none"/>'
        "</svg>\n"
    )


def make_waveform(source: Path, out_dir: Path, media_id: uuid.UUID) -> Derivative:
    """Write ``{media_id}-waveform.json`` and ``-waveform.svg`` (both or neither)."""
    peaks = compute_peaks(source)
    json_path = out_dir / derivative_name(media_id, "waveform", "json")
    svg_path = out_dir / derivative_name(media_id, "waveform", "svg")
    with atomic_outputs(json_path, svg_path) as (json_temp, svg_temp):
        json_temp.write_text(peaks.to_json())
        svg_temp.write_text(render_svg(peaks))
        size = json_temp.stat().st_size
    duration = peaks.frames / peaks.sample_rate if peaks.sample_rate else 0.0
    return Derivative(
        "WAVEFORM",
        json_path,
        "application/json",
        size,
        width=peaks.length,
        duration=duration,
        extra={"svg": svg_path, "samples_per_pixel": peaks.samples_per_pixel, "bits": peaks.bits},
    )


def generate_waveform(job: JobInput) -> JobResult:
    return JobResult(derivatives=[make_waveform(job.original, job.folder, job.media_id)])
