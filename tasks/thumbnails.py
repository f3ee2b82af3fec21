"""generate-thumbnails: THUMBNAIL 150x150 cover, MEDIUM inside 800x600, LARGE inside 1920x1080.

The core decodes once, at the smallest JPEG DCT scale that still covers LARGE, resizes
(libvips' Lanczos-3) in the stored orientation and rotates the smaller result, then
cascades: MEDIUM from LARGE, THUMBNAIL from MEDIUM. The square thumbnail keeps the region
with the most detail. A BlurHash of the thumbnail is the placeholder apps show while loading.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import blurhash
import numpy as np
from PIL import Image

from media_pipeline.derivatives import Derivative
from media_pipeline.imaging import fit_inside, load_upright, resample, save_jpeg
from media_pipeline.storage import atomic_outputs, derivative_name
from tasks.context import JobInput, JobResult

THUMBNAIL_SIDE = 150
MEDIUM_BOX = (800, 600)
LARGE_BOX = (1920, 1080)


@dataclass(frozen=True)
class ThumbnailSet:
    derivatives: list[Derivative]
    placeholder: str


def make_thumbnails(
    source: Path,
    out_dir: Path,
    media_id: uuid.UUID,
    *,
    quality: int = 82,
    max_pixels: int = 89_478_485,
) -> ThumbnailSet:
    """Write the three JPEG derivatives of ``source`` into ``out_dir`` (all or none)."""
    photo = load_upright(source, LARGE_BOX, max_pixels)
    large = photo.picture
    medium = resample(large, fit_inside(photo.full_size, MEDIUM_BOX))
    thumbnail = cover_square(medium if min(medium.size) >= THUMBNAIL_SIDE else large)
    images = {"THUMBNAIL": thumbnail, "MEDIUM": medium, "LARGE": large}
    targets = [out_dir / derivative_name(media_id, kind, "jpg") for kind in images]
    with atomic_outputs(*targets) as temps:
        for picture, temp in zip(images.values(), temps, strict=True):
            save_jpeg(picture, temp, quality)
        sizes = [temp.stat().st_size for temp in temps]
    derivatives = [
        Derivative(kind, target, "image/jpeg", size, picture.width, picture.height)
        for (kind, picture), target, size in zip(images.items(), targets, sizes, strict=True)
    ]
    return ThumbnailSet(derivatives, placeholder_hash(thumbnail))


def cover_square(image: Image.Image, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """A ``side`` x ``side`` square covering the most detailed region, as sharp's `entropy`.

    An image smaller than ``side`` gives its largest centred square, never an upscale.
    """
    width, height = image.size
    short = min(width, height)
    if short < side:
        left, top = (width - short) // 2, (height - short) // 2
        return image.crop((left, top, left + short, top + short))
    scale = side / short
    scaled_size = (max(side, round(width * scale)), max(side, round(height * scale)))
    scaled = resample(image, scaled_size)
    offset = interesting_offset(scaled, side)
    box = (
        (offset, 0, offset + side, side)
        if scaled.width > side
        else (0, offset, side, offset + side)
    )
    return scaled.crop(box)


def interesting_offset(image: Image.Image, side: int) -> int:
    """Where a ``side``-long window along the long axis holds the most edge energy.

    Ties (a flat picture) go to the window nearest the centre.
    """
    luma = np.asarray(image.getchannel(0) if image.mode == "YCbCr" else image.convert("L"))
    luma = luma.astype(np.int16)
    energy = np.zeros(luma.shape, dtype=np.int32)
    energy[:, 1:] += np.abs(np.diff(luma, axis=1))
    energy[1:, :] += np.abs(np.diff(luma, axis=0))
    profile = energy.sum(axis=0 if image.width > image.height else 1)
    span = len(profile) - side
    if span <= 0:
        return 0
    sums = np.convolve(profile, np.ones(side, dtype=np.int64), mode="valid")
    best = sums.max()
    candidates = np.flatnonzero(sums >= best * 0.97)
    return int(candidates[np.argmin(np.abs(candidates - span / 2))])


def placeholder_hash(thumbnail: Image.Image) -> str:
    """A BlurHash (4x3 components) apps render while the real thumbnail loads.

    Four by three cosine components carry no detail finer than a 16x16 input has.
    """
    small = thumbnail.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
    return blurhash.encode(np.asarray(small), components_x=4, components_y=3)


def generate_thumbnails(job: JobInput) -> JobResult:
    """The job: the three derivatives of the media's original, and its placeholder."""
    images = job.settings.images
    result = make_thumbnails(
        job.original,
        job.folder,
        job.media_id,
        quality=images.jpeg_quality,
        max_pixels=images.max_pixels,
    )
    return JobResult(derivatives=result.derivatives, placeholder=result.placeholder)
