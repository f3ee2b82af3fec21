"""The shared imaging helpers: libvips resampling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from media_pipeline.imaging import resample
from tests.support.media import photo_pixels


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


@pytest.mark.parametrize("mode", ["L", "RGB", "YCbCr", "CMYK"])
def test_resample_gives_pillows_lanczos_picture_at_the_exact_size(mode: str):
    picture = photo_pixels(1999, 1333, seed=3).convert(mode)
    for size in [(1440, 960), (801, 533), (150, 113)]:
        ours = resample(picture, size)
        pillow = picture.resize(size, Image.Resampling.LANCZOS)
        assert (ours.mode, ours.size) == (mode, size)
        assert psnr(ours, pillow) > 45, (mode, size)


def test_resample_keeps_other_modes_and_never_enlarges_through_libvips():
    rgba = photo_pixels(300, 200).convert("RGBA")
    halved = resample(rgba, (150, 100))
    assert (halved.mode, halved.size) == ("RGBA", (150, 100))
    pillow_halved = rgba.resize((150, 100), Image.Resampling.LANCZOS)  # premultiplied alpha
    assert np.array_equal(np.asarray(halved), np.asarray(pillow_halved))
    small = photo_pixels(100, 80)
    larger = resample(small, (120, 96))  # upscales go to Pillow, not libvips' reducer
    assert larger.size == (120, 96)
    pillow = small.resize((120, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(larger), np.asarray(pillow))
    assert resample(small, small.size) is small
