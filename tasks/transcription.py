"""transcribe-audio: speech to text through OpenAI's API (or any compatible server).

The core re-encodes the audio to compact mono MP3 (16 kHz, 32 kbit/s); audio longer than
``max_chunk_seconds`` or larger than the upload limit is cut at silences and each chunk
is transcribed on its own, then text and segment timestamps are stitched back into one
timeline. Retries belong to Prefect: the SDK's own retries are off and every call has a
timeout; a 429 or 5xx is a ``TransientError``, a 4xx about the file is permanent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media_pipeline.audio import audio_info
from media_pipeline.chunking import Span, loudness_profile, plan_spans
from media_pipeline.errors import (
    InvalidMedia,
    NotConfigured,
    PermanentError,
    TransientError,
    http_status_error,
)
from media_pipeline.ffmpeg import input_args, run_ffmpeg
from media_pipeline.settings import OpenAISettings
from tasks.context import JobInput, JobResult, Transcript, transcription_cost

if TYPE_CHECKING:  # the SDK is imported when a call is made: importing the flow stays fast
    from openai import OpenAI

ENCODED_BYTES_PER_SECOND = 32_000 // 8
UPLOAD_HEADROOM = 0.9  # MP3 frames and container overhead stay well inside the limit


def encode_span(source: Path, span: Span, target: Path) -> None:
    run_ffmpeg(
        [
            *input_args(source, seek=span.start),
            "-t",
            f"{span.duration:.3f}",
            "-vn",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "32k",
            "-f",
            "mp3",
            str(target),
        ],
        what=f"{source.name}: re-encoding audio for transcription",
    )


def plan_chunks(source: Path, max_seconds: float) -> list[Span]:
    info = audio_info(source)
    if info.duration is not None and 0 < info.duration <= max_seconds:
        return [Span(0.0, info.duration)]
    profile, duration = loudness_profile(source)
    if duration <= 0:
        raise InvalidMedia(f"{source.name}: the audio stream is empty")
    return plan_spans(profile, duration, max_seconds)


def transcribe_file(
    source: Path,
    client: OpenAI,
    *,
    model: str = "whisper-1",
    language: str | None = None,
    max_upload_bytes: int = 24 * 1024 * 1024,
    max_chunk_seconds: float = 1200,
    before_call: Callable[[], None] = lambda: None,
    on_chunk: Callable[[int, int], None] = lambda done, total: None,
) -> Transcript:
    """Transcribe ``source`` in as many calls as its length needs."""
    longest_upload = max_upload_bytes * UPLOAD_HEADROOM / ENCODED_BYTES_PER_SECOND
    max_seconds = min(max_chunk_seconds, longest_upload)
    spans = plan_chunks(source, max_seconds)
    texts, segments, languages = [], [], []
    with tempfile.TemporaryDirectory(prefix="transcribe-") as work:
        for index, span in enumerate(spans):
            chunk = Path(work) / f"chunk-{index:04d}.mp3"
            encode_span(source, span, chunk)
            if chunk.stat().st_size > max_upload_bytes:
                raise PermanentError(
                    f"{source.name}: a {span.duration:.0f} s chunk is "
                    f"{chunk.stat().st_size} bytes, over the upload limit"
                )
            before_call()
            response = call_transcription(client, chunk, model, language)
            chunk.unlink()
            texts.append((response.get("text") or "").strip())
            languages.append(response.get("language"))
            segments.extend(shift_segments(response.get("segments") or [], span))
            on_chunk(index + 1, len(spans))
    return Transcript(
        text=" ".join(t for t in texts if t),
        language=next((lang for lang in languages if lang), language or None),
        duration=spans[-1].end,
        model=model,
        segments=segments,
        calls=len(spans),
    )


def shift_segments(raw: list[dict[str, Any]], span: Span) -> list[dict[str, Any]]:
    """Segments moved onto the whole file's timeline, clamped to their chunk."""
    shifted = []
    for segment in raw:
        start = span.start + max(0.0, float(segment.get("start", 0.0)))
        end = span.start + min(span.duration, float(segment.get("end", span.duration)))
        shifted.append(
            {
                "start": round(start, 3),
                "end": round(max(start, end), 3),
                "text": str(segment.get("text", "")).strip(),
            }
        )
    return shifted


def call_transcription(
    client: OpenAI, chunk: Path, model: str, language: str | None
) -> dict[str, Any]:
    """One API call; the SDK's errors become the pipeline's retry classes."""
    import openai

    options: dict[str, Any] = {"model": model}
    if language:
        options["language"] = language
    if model.startswith("whisper"):
        options |= {"response_format": "verbose_json", "timestamp_granularities": ["segment"]}
    else:  # the gpt-4o transcribe models answer json only, without segments
        options["response_format"] = "json"
    try:
        with chunk.open("rb") as audio:
            response = client.audio.transcriptions.create(
                file=(chunk.name, audio, "audio/mpeg"), **options
            )
    except openai.APIStatusError as exc:
        raise http_status_error(
            "OpenAI", exc.status_code, exc.response.headers, exc.message
        ) from None
    except openai.APITimeoutError:
        raise TransientError("OpenAI did not answer in time (timeout)") from None
    except openai.APIConnectionError as exc:
        raise TransientError(f"cannot reach OpenAI ({exc.__cause__ or exc})") from None
    return response.model_dump() if hasattr(response, "model_dump") else {"text": str(response)}


def openai_client(settings: OpenAISettings) -> OpenAI:
    from openai import OpenAI

    if not settings.api_key.get_secret_value():
        raise NotConfigured(
            "OpenAI is not configured: set OPENAI_API_KEY "
            "(and OPENAI_BASE_URL for an OpenAI-compatible server)"
        )
    return OpenAI(
        api_key=settings.api_key.get_secret_value(),
        base_url=settings.base_url or None,
        max_retries=0,  # Prefect's task retries are the one retry layer
        timeout=settings.openai_timeout_seconds,
    )


def transcribe_audio(job: JobInput) -> JobResult:
    """The job: a transcript of the whole recording, and its estimated cost."""
    settings = job.settings.openai
    transcript = transcribe_file(
        job.original,
        openai_client(settings),
        model=settings.transcription_model,
        language=settings.transcription_language or None,
        max_upload_bytes=settings.transcription_max_upload_bytes,
        max_chunk_seconds=settings.transcription_max_chunk_seconds,
        before_call=job.before_call,
        on_chunk=job.on_progress,
    )
    cost = transcription_cost(transcript.duration, settings.transcription_price_per_minute)
    return JobResult(transcript=transcript, estimated_cost=cost)
