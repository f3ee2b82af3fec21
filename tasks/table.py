"""The job table: every media job, stated once.

Routing (which jobs a media gets), queue priorities, deployments, docs and the CLI all
read this table. Adding a job is one module under ``tasks/`` and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from db.models import MediaType
from media_pipeline.errors import PermanentError
from tasks.enhancement import enhance_media, is_enhanceable
from tasks.media_context import JobOutput, MediaSource
from tasks.thumbnails import generate_thumbnails
from tasks.transcription import transcribe_audio
from tasks.video_preview import generate_video_preview
from tasks.video_thumbnail import generate_video_thumbnail
from tasks.waveform import generate_waveform

HIGH, NORMAL, LOW = 5, 10, 15
PRIORITY_QUEUES = {HIGH: "high", NORMAL: "normal", LOW: "low"}


def tiers() -> list[str]:
    """Queue names, highest priority (lowest number) first."""
    return [PRIORITY_QUEUES[p] for p in sorted(PRIORITY_QUEUES)]


def always(_: MediaSource) -> bool:
    return True


@dataclass(frozen=True)
class Job:
    name: str
    media_type: MediaType
    priority: int
    run: Callable[[str], JobOutput]
    description: str
    applies: Callable[[MediaSource], bool] = always

    @property
    def queue(self) -> str:
        return PRIORITY_QUEUES[self.priority]


@dataclass(frozen=True)
class JobTable:
    jobs: tuple[Job, ...]

    def __post_init__(self) -> None:
        names = [job.name for job in self.jobs]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate job names in the job table: {names}")

    def __iter__(self):  # type: ignore[no-untyped-def]
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
        self, media: MediaSource, names: Sequence[str] | None = None, tier: str | None = None
    ) -> list[Job]:
        """The jobs that apply to ``media``, optionally limited to ``names`` or a tier's queue."""
        if tier is not None and tier not in PRIORITY_QUEUES.values():
            raise PermanentError(f"unknown tier {tier!r}; tiers: {', '.join(tiers())}")
        wanted: Iterable[Job] = self.jobs if names is None else [self.get(n) for n in names]
        return [
            job
            for job in wanted
            if job.media_type is media.type
            and job.applies(media)
            and (tier is None or job.queue == tier)
        ]

    def tiers_for(self, media: MediaSource) -> list[str]:
        """The queues this media's jobs go to, highest priority first."""
        return sorted({job.queue for job in self.select(media)}, key=tiers().index)


JOB_TABLE = JobTable(
    (
        Job(
            "generate-thumbnails",
            MediaType.IMAGE,
            HIGH,
            generate_thumbnails,
            "THUMBNAIL 150x150 cover, MEDIUM inside 800x600, LARGE inside 1920x1080 (JPEG)",
        ),
        Job(
            "ai-enhancement",
            MediaType.IMAGE,
            NORMAL,
            enhance_media,
            "Enhanced portrait from Gemini, as a new media (DISP and DECD alerts by default)",
            applies=is_enhanceable,
        ),
        Job(
            "transcribe-audio",
            MediaType.AUDIO,
            HIGH,
            transcribe_audio,
            "Transcription (new active version) from OpenAI speech-to-text",
        ),
        Job(
            "generate-waveform",
            MediaType.AUDIO,
            LOW,
            generate_waveform,
            "Peaks in audiowaveform's JSON format and an SVG picture",
        ),
        Job(
            "generate-video-preview",
            MediaType.VIDEO,
            NORMAL,
            generate_video_preview,
            "The first 10 s as a web-playable MP4 (H.264 + AAC), short side at most 720 px",
        ),
        Job(
            "generate-video-thumbnail",
            MediaType.VIDEO,
            NORMAL,
            generate_video_thumbnail,
            "The frame at 2 s as a JPEG, long side at most 1280 px",
        ),
    )
)
