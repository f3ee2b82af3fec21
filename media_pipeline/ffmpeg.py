"""Running the ffmpeg binary on untrusted media: local files only, a time limit, clear errors.

The binary is the configured one, else a system ``ffmpeg`` on PATH, else the one shipped
by the ``imageio-ffmpeg`` package (so a fresh machine needs no system install).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

from media_pipeline.errors import InvalidMedia
from media_pipeline.settings import get_settings

# Inputs may only be read from local files: a crafted playlist cannot fetch a URL.
INPUT_GUARD = ["-protocol_whitelist", "file,pipe"]


@cache
def _resolve(configured: str) -> str:
    if configured:
        return configured
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


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
