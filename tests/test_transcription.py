"""transcribe-audio through the real openai SDK against a local OpenAI-speaking server."""

from __future__ import annotations

import io
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from openai import OpenAI
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from db.models import JobState, MediaStatus, Transcription
from db.repository import load_media
from db.session import session_scope
from deployments.operations.registration import register_media
from flows.media import process_media
from flows.runner import run_core
from media_pipeline.errors import PermanentError, TransientError
from media_pipeline.settings import get_settings
from tasks.table import JOB_TABLE
from tasks.transcription import call_transcription, transcribe_file
from tests.support.fake_providers import FakeProviders, Fault, audio_duration
from tests.support.media import make_tone, make_voice_note


def client_for(fake: FakeProviders, timeout: float = 30) -> OpenAI:
    return OpenAI(api_key="sk-test", base_url=f"{fake.url}/v1", max_retries=0, timeout=timeout)


def test_30_minute_recording_is_cut_at_silences_and_stitched(fake_providers, tmp_path: Path):
    source = make_voice_note(
        tmp_path / "meeting.ogg",
        1800,
        gap_every=50,
        rate=8000,
        codec_args=("-c:a", "libopus", "-b:a", "12k"),
    )
    progress = []

    transcript = transcribe_file(
        source,
        client_for(fake_providers),
        max_chunk_seconds=300,
        on_chunk=lambda done, total: progress.append((done, total)),
    )

    uploads = fake_providers.calls("openai")
    assert transcript.calls == len(uploads) == 7 and progress[-1] == (7, 7)
    for upload in uploads:
        assert upload.fields["model"] == "whisper-1"
        assert upload.fields["response_format"] == "verbose_json"
        assert upload.fields["timestamp_granularities[]"] == "segment"
        assert upload.headers["authorization"] == "Bearer sk-test"
        with av.open(io.BytesIO(upload.files["file"])) as container:
            stream = container.streams.audio[0]
            assert container.format.name == "mp3"
            assert (stream.codec_context.sample_rate, stream.codec_context.channels) == (16000, 1)
    segments = transcript.segments
    assert segments[0]["start"] == 0.0 and abs(segments[-1]["end"] - 1800) < 0.5
    assert abs(transcript.duration - 1800) < 0.5
    for previous, current in itertools.pairwise(segments):
        assert current["start"] >= previous["end"] - 1e-6 and current["end"] >= current["start"]
    lengths = [audio_duration(upload.files["file"]) for upload in uploads]
    assert max(lengths) <= 300.1
    cuts = np.cumsum(lengths)[:-1]
    assert all(48.8 <= cut % 50 <= 50.01 for cut in cuts), cuts  # each cut in a pause
    assert "Segment 0 of the voice note." in transcript.text


def test_provider_errors_are_classified_for_the_retry_policy(fake_providers, tmp_path: Path):
    chunk = make_tone(tmp_path / "c.mp3", 2.0, rate=16000)
    client = client_for(fake_providers, timeout=1)
    fake_providers.queue(
        "openai",
        Fault(429, {"Retry-After": "7"}),
        Fault(503),
        Fault(413),
        Fault(400),
        Fault(delay=2.5),
    )
    with pytest.raises(TransientError) as limited:
        call_transcription(client, chunk, "whisper-1", None)
    assert limited.value.retry_after == 7 and "429" in str(limited.value)
    with pytest.raises(TransientError, match="503"):
        call_transcription(client, chunk, "whisper-1", None)
    with pytest.raises(PermanentError, match=r"413.*too large.*not retried"):
        call_transcription(client, chunk, "whisper-1", None)
    with pytest.raises(PermanentError, match="400"):
        call_transcription(client, chunk, "whisper-1", None)
    with pytest.raises(TransientError, match="timeout"):
        call_transcription(client, chunk, "whisper-1", None)
    assert len(fake_providers.calls("openai")) == 5  # no retry inside the SDK


def test_gpt4o_models_ask_for_json(fake_providers, tmp_path: Path):
    chunk = make_tone(tmp_path / "c.mp3", 2.0, rate=16000)
    answer = call_transcription(client_for(fake_providers), chunk, "gpt-4o-transcribe", "fr")
    (upload,) = fake_providers.calls("openai")
    assert upload.fields["response_format"] == "json" and upload.fields["language"] == "fr"
    assert answer["text"].startswith("Segment 0")


def job(summary_media_id: uuid.UUID, name: str):
    with session_scope() as session:
        return next(j for j in load_media(session, summary_media_id).jobs if j.job == name)


def transcriptions(media_id: uuid.UUID) -> list[Transcription]:
    with session_scope() as session:
        return list(
            session.query(Transcription)
            .filter_by(media_id=media_id)
            .order_by(Transcription.version)
        )


pytestmark_flow = pytest.mark.usefixtures("prefect_server")


def media_artifacts(media_id: uuid.UUID) -> tuple[Any, Any]:
    """The media's table artifact and the transcript its run published."""
    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"media-{media_id}"]))
        )
        (transcript,) = [
            a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[table.flow_run_id])
                )
            )
            if (a.description or "").startswith(f"transcript-{media_id}")
        ]
    return table, transcript


@pytestmark_flow
def test_voice_note_gets_transcript_and_waveform(
    app_db, fake_providers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MEDIA_PIPELINE_PUBLIC_MEDIA_URL", "https://cdn.example.org/media/")
    get_settings.cache_clear()
    note = make_voice_note(
        tmp_path / "note.m4a",
        12,
        gap_every=6,
        rate=16000,
        codec_args=("-c:a", "aac", "-b:a", "48k"),
    )
    media = register_media(note, category="DISP")
    assert media.type.value == "AUDIO"

    state = process_media(str(media.id), return_state=True)

    assert state.is_completed(), state.message
    (row,) = transcriptions(media.id)
    assert (row.version, row.is_active, row.source.value, row.model) == (
        1,
        True,
        "AUTO",
        "whisper-1",
    )
    assert row.language == "english" and abs(row.duration - 12) < 0.2
    assert [s["start"] for s in row.segments] == [0.0, 5.0, 10.0]
    transcribe = job(media.id, "transcribe-audio")
    assert transcribe.state is JobState.SUCCEEDED
    assert transcribe.estimated_cost == pytest.approx(12 / 60 * 0.006, rel=0.02)
    with session_scope() as session:
        stored = load_media(session, media.id)
        assert stored.status is MediaStatus.READY
        (waveform,) = stored.derivatives
        assert waveform.type.value == "WAVEFORM" and waveform.extra["svg"].endswith(".svg")

    table, transcript = media_artifacts(media.id)
    with get_client(sync_client=True) as client:
        (files,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"files-{media.id}"]))
        )
    svg_url = f"https://cdn.example.org/media/{waveform.extra['svg']}"
    assert f"![WAVEFORM]({svg_url})" in files.data  # the picture itself, from the public URL
    assert f"(https://cdn.example.org/media/{waveform.storage_key})" in files.data
    rows = json.loads(table.data)
    assert {(r["job"], r["state"], r["output"]) for r in rows} == {
        ("transcribe-audio", "SUCCEEDED", "TRANSCRIPTION"),
        ("generate-waveform", "SUCCEEDED", "WAVEFORM"),
    }
    assert "[   5.00 -   10.00]** Segment 1 of the voice note." in transcript.data

    second = process_media(str(media.id), return_state=True)
    assert second.is_completed()
    first, latest = transcriptions(media.id)
    assert (first.is_active, latest.is_active, latest.version) == (False, True, 2)


@pytestmark_flow
def test_same_flow_run_never_adds_a_second_version(sqlite_db, fake_providers, tmp_path: Path):
    media = register_media(make_tone(tmp_path / "a.wav", 3.0, rate=16000), category="AUTRE")

    @flow
    def rerun_inside_one_flow_run(media_id: str) -> None:
        job = JOB_TABLE.get("transcribe-audio")
        run_core(job, uuid.UUID(media_id), get_settings())
        run_core(job, uuid.UUID(media_id), get_settings())

    rerun_inside_one_flow_run(str(media.id))

    assert len(transcriptions(media.id)) == 1
    assert len(fake_providers.calls("openai")) == 1


@pytestmark_flow
def test_missing_api_key_skips_transcription(sqlite_db, monkeypatch, tmp_path: Path):
    media = register_media(make_tone(tmp_path / "a.mp3", 2.0), category="AUTRE")

    state = process_media(str(media.id), return_state=True)

    assert state.is_completed()
    skipped = job(media.id, "transcribe-audio")
    assert skipped.state is JobState.SKIPPED and "OPENAI_API_KEY" in skipped.error
    assert job(media.id, "generate-waveform").state is JobState.SUCCEEDED
    with session_scope() as session:
        assert load_media(session, media.id).status is MediaStatus.READY


@pytestmark_flow
def test_429_retry_after_is_waited_out_then_succeeds(sqlite_db, fake_providers, tmp_path: Path):
    media = register_media(make_tone(tmp_path / "a.wav", 2.0, rate=16000), category="AUTRE")
    fake_providers.queue("openai", Fault(429, {"Retry-After": "5"}))
    started = time.monotonic()

    state = process_media(str(media.id), jobs=["transcribe-audio"], return_state=True)

    assert state.is_completed(), state.message
    transcribe = job(media.id, "transcribe-audio")
    assert (transcribe.state, transcribe.attempts) == (JobState.SUCCEEDED, 2)
    assert len(fake_providers.calls("openai")) == 2
    assert time.monotonic() - started >= 5  # waited the Retry-After, not only the 2 s backoff


@pytestmark_flow
def test_413_fails_at_once_and_keys_never_leak(app_db, fake_providers, tmp_path: Path):
    media = register_media(make_tone(tmp_path / "a.wav", 2.0, rate=16000), category="AUTRE")
    key = "sk-test-secret-key-0123456789"
    fake_providers.queue("openai", Fault(413, message=f"Upload too large for key {key}"))

    state = process_media(str(media.id), return_state=True)

    assert state.is_failed()
    failed = job(media.id, "transcribe-audio")
    assert (failed.state, failed.attempts) == (JobState.FAILED, 1)
    assert "413" in failed.error and key not in failed.error and "***" in failed.error
    assert key not in (state.message or "")
    with session_scope() as session:
        assert load_media(session, media.id).status is MediaStatus.PARTIAL


HOSTILE = (
    " <img src=x onerror=alert(1)> [click](javascript:alert(1)) ![p](http://x/p.png)\n# Heading"
)


@pytestmark_flow
def test_what_a_voice_note_says_stays_plain_text_in_its_transcript_artifact(
    sqlite_db, fake_providers, tmp_path: Path
):
    fake_providers.phrase = HOSTILE  # said in every segment
    media = register_media(
        make_voice_note(tmp_path / "note.m4a", 6, gap_every=6, codec_args=("-c:a", "aac"))
    )
    assert process_media(str(media.id), return_state=True).is_completed()

    text = media_artifacts(media.id)[1].data
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "<img" not in text
    assert r"\[click\](javascript:alert(1))" in text and "[click](" not in text
    assert r"\!\[p\](http://x/p.png)" in text
    assert "\n# Heading" not in text and r"\# Heading" in text
    (row,) = transcriptions(media.id)
    assert "<img src=x onerror=alert(1)>" in row.text  # the app's copy is what was said
