"""``media-pipeline demo``: generate sample media of every kind and process each one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from media_pipeline.processing import process_file


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


SAMPLES = [("photo.jpg", sample_photo, "DISP")]


def run_demo() -> list[dict[str, Any]]:
    summaries = []
    with tempfile.TemporaryDirectory(prefix="media-pipeline-demo-") as folder:
        for name, make, category in SAMPLES:
            summaries.append(process_file(make(Path(folder) / name), category=category))
    return summaries
