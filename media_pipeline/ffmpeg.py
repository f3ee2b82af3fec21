"""Running the ffmpeg binary on untrusted media: local files only, a time limit, clear errors.

The binary is the one shipped by the ``imageio-ffmpeg`` package (FFmpeg 9 with libx264,
AAC, Opus, MP3 and VP8/9: a fresh machine needs no system install, and every machine runs
the same one), unless ``MEDIA_PIPELINE_FFMPEG_PATH`` names another, which must then be
FFmpeg 7.0 or newer: Debian 12's 5.1, for one, decodes some VP9 frames wrongly and lacks
options the tests use.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from media_pipeline.errors import InvalidMedia, PermanentError
from media_pipeline.settings import get_settings

# Inputs may only be read from local files: a crafted playlist cannot fetch a URL.
INPUT_GUARD = ["-protocol_whitelist", "file,pipe"]


MIN_VERSION = (7, 0)
VERSION = re.compile(r"ffmpeg version n?(\d+)\.(\d+)")


@cache
def _resolve(configured: str) -> str:
    if not configured:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    path = shutil.which(configured) or configured
    try:
        banner = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError as exc:
        raise PermanentError(
            f"MEDIA_PIPELINE_FFMPEG_PATH={configured!r} cannot run ({exc}); "
            "unset it to use the bundled ffmpeg"
        ) from None
    found = VERSION.search(banner)
    if found is None:  # a development build ("N-113...") says no version: trust it
        return path
    version = (int(found[1]), int(found[2]))
    if version < MIN_VERSION:
        raise PermanentError(
            f"MEDIA_PIPELINE_FFMPEG_PATH={configured!r} is ffmpeg {found[1]}.{found[2]}; the "
            f"pipeline needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer: unset it to use the "
            "bundled ffmpeg"
        )
    return path


def ffmpeg_exe() -> str:
    return _resolve(get_settings().ffmpeg.ffmpeg_path)


def run_ffmpeg(args: list[str], what: str, timeout: float | None = None) -> bytes:
    """Run ffmpeg with ``args`` and return its standard output.

    A failure is ``InvalidMedia`` naming ``what`` with ffmpeg's last error line.
    """
    limit = timeout or get_settings().ffmpeg.ffmpeg_timeout_seconds
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        result = subprocess.run(command, capture_output=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise InvalidMedia(
            f"{what}: ffmpeg took longer than {limit:.0f} s; not retried "
            "(raise MEDIA_PIPELINE_FFMPEG_TIMEOUT_SECONDS for very long media)"
        ) from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise InvalidMedia(f"{what}: ffmpeg failed ({detail[-1] if detail else result.returncode})")
    return result.stdout


def input_args(path: Path, *, seek: float | None = None) -> list[str]:
    """``-i path`` with the network guard, seeking on input when asked (fast: no decode)."""
    seek_args = ["-ss", f"{seek:.3f}"] if seek else []
    return [*INPUT_GUARD, *seek_args, "-i", str(path)]
