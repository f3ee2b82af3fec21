"""Where media files live, and how they are written.

``{media_root}/alerts/{alert_id}/media/{media_id}/`` holds ``original.{ext}`` and the
derivatives ``{media_id}-{type}.{ext}``. Ids are validated as UUIDs before they touch a
path. Files are written to a temporary name in the same folder and renamed into place,
so that a crash never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from media_pipeline.errors import InvalidId


def parse_uuid(value: object, what: str = "id") -> uuid.UUID:
    """The UUID in ``value``, or ``InvalidId``; nothing else reaches a path or a query."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        parsed = uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidId(f"{what} {str(value)[:80]!r} is not a UUID") from None
    if str(parsed) != str(value).lower():
        raise InvalidId(f"{what} {str(value)[:80]!r} is not a UUID in canonical form")
    return parsed


def media_key(alert_id: object, media_id: object) -> str:
    """``alerts/{alert_id}/media/{media_id}``: the media's folder, on disk or in a bucket."""
    alert = parse_uuid(alert_id, "alert id")
    media = parse_uuid(media_id, "media id")
    return f"alerts/{alert}/media/{media}"


def derivative_name(media_id: object, kind: str, ext: str) -> str:
    """``{media_id}-{kind}.{ext}``, kind in lower case (``thumbnail``, ``waveform``...)."""
    return f"{parse_uuid(media_id, 'media id')}-{kind.lower()}.{ext}"


def relative_key(media_root: Path, path: Path) -> str:
    """The storage key recorded in the database: the path relative to the media root."""
    return path.resolve().relative_to(media_root.resolve()).as_posix()


@contextlib.contextmanager
def atomic_outputs(*targets: Path) -> Iterator[list[Path]]:
    """Temporary paths for ``targets``, renamed onto them only if the block succeeds.

    On any exception every temporary file is removed and no target is touched, so a
    job that writes several files publishes all of them or none.
    """
    temps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
            )
            os.close(fd)
            temps.append(Path(name))
        yield temps
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
