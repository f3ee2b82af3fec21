"""Media factories: real files generated on the spot (photos with EXIF orientation...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# How each EXIF orientation is displayed; the file stores the inverse.
_DISPLAY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}
MARKER = (220, 20, 30)  # red block in the upright picture's top-left corner


def photo_pixels(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like upright picture: smooth gradients, texture, a red top-left marker."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 120 + 80 * np.sin(x / max(width, 1) * 6.0) + 20 * np.cos(y / 37.0)
    g = 110 + 70 * np.cos(y / max(height, 1) * 5.0) + 15 * np.sin((x + y) / 53.0)
    b = 100 + 60 * np.sin((x - y) / max(width + height, 1) * 9.0)
    pixels = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    block = max(4, min(width, height) // 8)
    image.paste(MARKER, (0, 0, block, block))
    return image


def stored_for_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    display = _DISPLAY.get(orientation)
    if display is None:
        return upright
    return upright.transpose(_INVERSE.get(display, display))


def make_jpeg(
    path: Path,
    width: int,
    height: int,
    orientation: int | None = None,
    seed: int = 0,
    **save: Any,
) -> Path:
    """A JPEG that displays as ``width`` x ``height`` once its EXIF orientation is applied."""
    image = stored_for_orientation(photo_pixels(width, height, seed), orientation or 1)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    save.setdefault("quality", 90)
    image.save(path, "JPEG", exif=exif, **save)
    return path


def is_marker(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 170 and g < 90 and b < 90
