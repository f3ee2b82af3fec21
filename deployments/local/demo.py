"""``media-pipeline demo``: generate sample media of every kind and process each one."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from deployments.local.processing import process_file
from media_pipeline.ffmpeg import ffmpeg_exe
from media_pipeline.payloads import MediaSummary


def sample_photo(path: Path) -> Path:
    """A 4000x3000 phone photo stored sideways with EXIF orientation 6 (displays portrait)."""
    y, x = np.mgrid[0:4000, 0:3000].astype(np.float32)
    pixels = np.stack(
        [120 + 80 * np.sin(x / 500), 110 + 70 * np.cos(y / 700), 100 + 60 * np.sin((x - y) / 900)],
        axis=-1,
    )
    upright = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif)
    return path


def sample_voice_note(path: Path) -> Path:
    """Eight seconds of a two-tone "voice" with a pause, as an AAC voice note (M4A)."""
    expression = "if(lt(mod(t\\,4)\\,3)\\,0.4*sin(2*PI*(220+40*sin(2*PI*t))*t)\\,0)"
    _ffmpeg("-f", "lavfi", "-i", f"aevalsrc={expression}:s=16000:d=8", "-c:a", "aac", str(path))
    return path


def sample_video(path: Path) -> Path:
    """A 12-second 720p phone clip with sound (H.264 + AAC)."""
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30:duration=12",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:duration=12",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    return path


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


# Without provider keys, enhancement and transcription are SKIPPED with the setting to set.
SAMPLES = [
    ("photo.jpg", sample_photo, "DISP"),
    ("voice-note.m4a", sample_voice_note, "AUTRE"),
    ("clip.mp4", sample_video, "AUTRE"),
]


def run_demo() -> list[MediaSummary]:
    summaries = []
    with tempfile.TemporaryDirectory(prefix="media-pipeline-demo-") as folder:
        for name, make, category in SAMPLES:
            summaries.append(process_file(make(Path(folder) / name), category=category))
    return summaries
