"""What a processing core hands back: files it wrote, described for the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Derivative:
    """One derivative file: its type (``THUMBNAIL``, ``WAVEFORM``...), path and metadata."""

    kind: str
    path: Path
    mime_type: str
    bytes: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
