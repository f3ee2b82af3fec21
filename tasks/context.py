"""What a job's core is given and what it gives back: paths and settings in, typed
results out. No Prefect, no database: ``flows/runner.py`` loads the media, calls the core
and records what it returns."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media_pipeline.derivatives import Derivative
from media_pipeline.enums import MediaType

if TYPE_CHECKING:
    from media_pipeline.settings import Settings


@dataclass(frozen=True)
class JobInput:
    """The media a job works on: its original, where its outputs go, what it is."""

    media_id: uuid.UUID
    type: MediaType
    category: str
    is_enhanced: bool
    original: Path
    folder: Path
    settings: Settings
    before_call: Callable[[], object] = lambda: None  # takes a provider call slot
    on_progress: Callable[[int, int], None] = lambda done, total: None


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    duration: float
    model: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0


def transcription_cost(duration: float, price_per_minute: float) -> float:
    """Estimated USD of transcribing ``duration`` seconds."""
    return round(duration / 60 * price_per_minute, 6)


@dataclass(frozen=True)
class Enhanced:
    path: Path
    width: int
    height: int
    bytes: int
    model: str
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """What a core made. ``flows/runner.py`` records each kind where it belongs."""

    derivatives: list[Derivative] = field(default_factory=list)
    placeholder: str | None = None  # a BlurHash for the media row
    transcript: Transcript | None = None
    enhanced: Enhanced | None = None  # a new media of its own
    estimated_cost: float | None = None

    def files(self) -> list[Path]:
        """Every file the core wrote (to be published under its key)."""
        paths = [d.path for d in self.derivatives]
        paths += [v for d in self.derivatives for v in d.extra.values() if isinstance(v, Path)]
        return paths + ([self.enhanced.path] if self.enhanced else [])
