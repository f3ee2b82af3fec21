"""The shared imaging helpers: libvips resampling and the allocator tuning."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
    assert resample(rgba, (150, 100)).mode == "RGBA"
    small = photo_pixels(100, 80)
    larger = resample(small, (120, 96))  # upscales go to Pillow, not libvips' reducer
    assert larger.size == (120, 96)
    pillow = small.resize((120, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(larger), np.asarray(pillow))
    assert resample(small, small.size) is small


def test_freed_image_buffers_are_reused_instead_of_faulted_in_again():
    """The second 20 MB buffer reuses the first's pages once the allocator is tuned."""
    script = textwrap.dedent(
        """
        import resource, sys
        from media_pipeline.allocator import keep_freed_image_buffers
        tuned = keep_freed_image_buffers() if sys.argv[1] == "tuned" else True
        def touch():
            buffer = bytearray(20 * 1024 * 1024)
            buffer[::4096] = b"x" * len(range(0, len(buffer), 4096))
        touch()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        touch()
        print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """
    )
    faults = {}
    for mode in ("default", "tuned"):
        out = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        )
        applied, count = out.stdout.split()
        assert applied == "True"
        faults[mode] = int(count)
    pages = 20 * 1024 * 1024 // 4096
    assert faults["default"] > pages // 2, faults
    assert faults["tuned"] < pages // 20, faults
