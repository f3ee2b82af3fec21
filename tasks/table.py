"""The job table: every media job, stated once, as data.

Routing (which jobs a media gets), queue priorities, deployments, docs and the CLI all read
this table. Each entry names its core (``module:function``), imported only when the job
runs, so reading the table imports no media library. Adding a job is one module under
``tasks/`` and one entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from media_pipeline.enums import MediaType
from media_pipeline.errors import PermanentError

if TYPE_CHECKING:
    from tasks.context import JobInput, JobResult

HIGH, NORMAL, LOW = 5, 10, 15
PRIORITY_QUEUES = {HIGH: "high", NORMAL: "normal", LOW: "low"}
# Backfills (``flows/backfill.py``) run on a queue of their own, below every tier: a worker
# takes one of their runs only when no upload's run of that kind waits.
BACKFILL_QUEUE, BACKFILL_PRIORITY = "backfill", 20
BACKFILL_TAG = "backfill"  # every media run of a backfill: it gives way to uploads
BACKFILL_CONTROL_TAG = "backfill-control"  # a backfill's own run: it only waits


def tiers() -> list[str]:
    """Queue names, highest priority (lowest number) first."""
    return [PRIORITY_QUEUES[p] for p in sorted(PRIORITY_QUEUES)]


class MediaFacts(Protocol):
    """What routing reads of a media (``flows.sources.MediaSource`` has these)."""

    type: MediaType
    category: str
    is_enhanced: bool


@dataclass(frozen=True)
class Job:
    name: str
    media_type: MediaType
    priority: int
    core: str  # "module:function", a function (JobInput) -> JobResult
    description: str
    provider: str | None = None  # the rate-limited API it calls: one slot per call
    enhancement: bool = False  # only photos of the enhancement categories, never a copy
    output: Literal["derivatives", "transcription", "enhanced"] = "derivatives"
    # Bumped whenever the job's output changes (new sizes, a new model): every output row
    # records the version that made it, and ``backfill --outdated`` finds the older ones.
    version: int = 1

    @property
    def queue(self) -> str:
        return PRIORITY_QUEUES[self.priority]

    def load(self) -> Callable[[JobInput], JobResult]:
        module, function = self.core.split(":")
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]

    def applies(self, media: MediaFacts, enhancement_categories: Collection[str]) -> bool:
        if media.type is not self.media_type:
            return False
        if not self.enhancement:
            return True
        categories = {c.upper() for c in enhancement_categories}
        return not media.is_enhanced and media.category.upper() in categories


@dataclass(frozen=True)
class JobTable:
    jobs: tuple[Job, ...]

    def __post_init__(self) -> None:
        names = [job.name for job in self.jobs]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate job names in the job table: {names}")

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def get(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise PermanentError(f"unknown job {name!r}; known jobs: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [job.name for job in self.jobs]

    def with_job(self, job: Job) -> JobTable:
        """A copy with ``job`` added (or replacing the job of the same name)."""
        return JobTable((*tuple(j for j in self.jobs if j.name != job.name), job))

    def select(
        self,
        media: MediaFacts,
        enhancement_categories: Collection[str],
        names: Sequence[str] | None = None,
        tier: str | None = None,
    ) -> list[Job]:
        """The jobs that apply to ``media``, optionally limited to ``names`` or a tier's queue."""
        if tier is not None and tier not in PRIORITY_QUEUES.values():
            raise PermanentError(f"unknown tier {tier!r}; tiers: {', '.join(tiers())}")
        wanted: Iterable[Job] = self.jobs if names is None else [self.get(n) for n in names]
        return [
            job
            for job in wanted
            if job.applies(media, enhancement_categories) and (tier is None or job.queue == tier)
        ]


JOB_TABLE = JobTable(
    (
        Job(
            "generate-thumbnails",
            MediaType.IMAGE,
            HIGH,
            "tasks.thumbnails:generate_thumbnails",
            "THUMBNAIL 150x150 cover, MEDIUM inside 800x600, LARGE inside 1920x1080 (JPEG)",
        ),
        Job(
            "ai-enhancement",
            MediaType.IMAGE,
            NORMAL,
            "tasks.enhancement:enhance_media",
            "Enhanced portrait from Gemini, as a new media (DISP and DECD alerts by default)",
            provider="gemini",
            enhancement=True,
            output="enhanced",
        ),
        Job(
            "transcribe-audio",
            MediaType.AUDIO,
            HIGH,
            "tasks.transcription:transcribe_audio",
            "Transcription (new active version) from OpenAI speech-to-text",
            provider="openai",
            output="transcription",
        ),
        Job(
            "generate-waveform",
            MediaType.AUDIO,
            LOW,
            "tasks.waveform:generate_waveform",
            "Peaks in audiowaveform's JSON format and an SVG picture",
        ),
        Job(
            "generate-video-preview",
            MediaType.VIDEO,
            NORMAL,
            "tasks.video_preview:generate_video_preview",
            "The first 10 s as a web-playable MP4 (H.264 + AAC), short side at most 720 px",
        ),
        Job(
            "generate-video-thumbnail",
            MediaType.VIDEO,
            NORMAL,
            "tasks.video_thumbnail:generate_video_thumbnail",
            "The frame at 2 s as a JPEG, long side at most 1280 px",
        ),
    )
)
