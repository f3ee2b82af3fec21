"""Limits of the media tools (Pillow, ffmpeg) on untrusted input."""

from __future__ import annotations

from pydantic import Field

from media_pipeline.settings.base import Group


class ImageSettings(Group):
    jpeg_quality: int = Field(82, ge=1, le=95, description="JPEG quality of image derivatives")
    max_pixels: int = Field(
        89_478_485,
        gt=0,
        description="Images with more pixels are refused as decompression bombs (Pillow's limit)",
    )


class FfmpegSettings(Group):
    ffmpeg_path: str = Field(
        "",
        description="Another ffmpeg binary (7.0 or newer); empty: the one shipped by "
        "imageio-ffmpeg, the same on every machine",
    )
    ffmpeg_timeout_seconds: float = Field(
        300, gt=0, description="Time limit of one ffmpeg run on untrusted media"
    )
