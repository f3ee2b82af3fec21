"""Where media files live, and how they are written.

``{media_root}/alerts/{alert_id}/media/{media_id}/`` holds ``original.{ext}`` and the
derivatives ``{media_id}-{type}.{ext}``. Ids are parsed once where they enter (an HTTP
route, a CLI argument, a flow parameter, the client API) and are ``uuid.UUID`` after; a
path is built from ``uuid.UUID`` values only. Files are written to a temporary name in the
same folder and renamed into place, so that a crash never leaves a half-written file under
a final name.
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
    """The UUID in ``value``, or ``InvalidId``: for the entry points that take text (the
    client API, the CLI's arguments). The forms it takes are those the HTTP API and the
    flows' parameters take (pydantic's): any case, with or without hyphens."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidId(f"{what} {str(value)[:80]!r} is not a UUID") from None


def path_part(value: uuid.UUID, what: str) -> str:
    """``value`` as it appears in a key; anything but a ``uuid.UUID`` is refused, so that no
    unparsed text ever reaches a path."""
    if not isinstance(value, uuid.UUID):
        raise InvalidId(f"{what} {str(value)[:80]!r} is not a UUID")
    return str(value)


def media_key(alert_id: uuid.UUID, media_id: uuid.UUID) -> str:
    """``alerts/{alert_id}/media/{media_id}``: the media's folder, on disk or in a bucket."""
    return f"alerts/{path_part(alert_id, 'alert id')}/media/{path_part(media_id, 'media id')}"


def derivative_name(media_id: uuid.UUID, kind: str, ext: str) -> str:
    """``{media_id}-{kind}.{ext}``, kind in lower case (``thumbnail``, ``waveform``...)."""
    return f"{path_part(media_id, 'media id')}-{kind.lower()}.{ext}"


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
