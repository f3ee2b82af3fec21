"""Backfills: which media each selection takes, what a dry run estimates, and on real
processes (a Prefect server, warm workers) that a backfill touches only the media it
selected, brings outdated outputs to the current version in place, survives its worker's
death with no media done twice, and stops when cancelled."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from sqlalchemy import select, update

from db.backfill import Criteria, matching_media
from db.jobs import finish_job, plan_jobs
from db.models import (
    BackfillStatus,
    JobState,
    Media,
    MediaDerivative,
    MediaStatus,
    ProcessingJob,
    Transcription,
)
from db.session import session_scope, transaction
from deployments.operations.backfill import (
    cancel_backfill,
    estimate_backfill,
    get_backfill,
    start_backfill,
)
from deployments.operations.erasure import erase_media
from deployments.operations.registration import register_media
from deployments.worker.warm import WORKER_TYPE as WARM
from flows.submission import submit_media
from media_pipeline.enums import DerivativeType, MediaType
from media_pipeline.errors import PermanentError
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_TAG, JOB_TABLE
from tests.support.embedded import cli, embedded_env
from tests.support.media import make_jpeg, make_tone, make_voice_note
from tests.support.processes import wait_until
from tests.support.production import wait_for_runs

WAVEFORM = JOB_TABLE.get("generate-waveform")


def voice_notes(folder: Path, count: int, seconds: float = 1.0) -> list[Media]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        register_media(make_tone(folder / f"v{i}.wav", seconds, frequency=300 + 40 * i))
        for i in range(count)
    ]


def photos(folder: Path, count: int) -> list[Media]:
    return [register_media(make_jpeg(folder / f"p{i}.jpg", 640, 480, seed=i)) for i in range(count)]


def set_job(media_id: uuid.UUID, state: JobState, version: int | None = 1) -> None:
    def write(session):  # type: ignore[no-untyped-def]
        plan_jobs(session, media_id, [WAVEFORM.name])
        if state is not JobState.PENDING:
            finish_job(session, media_id, WAVEFORM.name, state, job_version=version)

    transaction(write)


def selected(selection: str, job=WAVEFORM, **filters) -> set[uuid.UUID]:  # type: ignore[no-untyped-def]
    criteria = Criteria(job, selection, ("DISP", "DECD"), **filters)  # type: ignore[arg-type]
    with session_scope() as session:
        return set(matching_media(session, criteria))


def test_each_selection_takes_its_media_and_never_one_in_progress(app_db, tmp_path: Path):
    none, done, old, failed, skipped, running = (m.id for m in voice_notes(tmp_path, 6))
    photo = photos(tmp_path, 1)[0].id
    set_job(done, JobState.SUCCEEDED)
    set_job(old, JobState.SUCCEEDED, version=1)
    set_job(failed, JobState.FAILED)
    set_job(skipped, JobState.SKIPPED)
    set_job(running, JobState.PENDING)

    assert selected("missing") == {none, failed, skipped}
    assert selected("failed") == {failed}
    assert selected("outdated") == set()  # every output is of the current version
    assert selected("outdated", job=dataclasses.replace(WAVEFORM, version=2)) == {done, old}
    assert selected("all") == {none, done, old, failed, skipped}
    assert photo in selected("all", job=JOB_TABLE.get("generate-thumbnails"))
    with session_scope() as session:
        alert = session.get(Media, none).alert_id
    assert selected("missing", alert_id=alert) == {none}


def test_a_dry_run_counts_and_prices_a_provider_job_and_refuses_what_cannot_run(
    app_db, tmp_path: Path
):
    notes = voice_notes(tmp_path, 3, seconds=2.0)
    with session_scope() as session:  # one of them has a measured duration of 90 s
        session.add(
            MediaDerivative(
                media_id=notes[0].id,
                type=DerivativeType.WAVEFORM,
                storage_key="k",
                mime_type="application/json",
                bytes=1,
                duration=90.0,
            )
        )

    found = estimate_backfill("transcribe-audio", "missing")

    assert found["count"] == 3 and found["types"] == {"AUDIO": 3}
    assert found["provider"] == "openai" and found["provider_calls"] == 3
    price = get_settings().openai.transcription_price_per_minute
    guessed = sum(n.size * 8 / 32_000 for n in notes[1:])  # the others, from their size
    assert found["estimated_cost"] == pytest.approx((90 + guessed) / 60 * price, abs=1e-4)
    assert estimate_backfill("generate-waveform", "missing")["estimated_cost"] == 0
    with pytest.raises(PermanentError, match="unknown job"):
        estimate_backfill("generate-everything", "missing")
    with pytest.raises(PermanentError, match="works on AUDIO media"):
        estimate_backfill("generate-waveform", "missing", media_type="IMAGE")
    with pytest.raises(PermanentError, match="unknown selection"):
        estimate_backfill("generate-waveform", "newest")


# --- on real processes ---------------------------------------------------------------


def backfill_runs(backfill_id: str) -> list:  # type: ignore[type-arg]
    """Every media run the backfill made (its tag), whatever their state."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[BACKFILL_TAG, f"backfill-{backfill_id}"])
            )
        )


def wait_for_backfill(backfill_id: str, timeout: float = 180) -> dict:  # type: ignore[type-arg]
    found: dict = {}

    def finished() -> bool:
        found.update(get_backfill(backfill_id))
        return found["status"] not in ("PENDING", "RUNNING", "CANCELLING")

    wait_until(finished, timeout, f"backfill {backfill_id} to end", interval=0.5)
    return found


def waveform_row(media_id: uuid.UUID) -> tuple:  # type: ignore[type-arg]
    with session_scope() as session:
        row = session.scalar(
            select(ProcessingJob).where(
                ProcessingJob.media_id == media_id, ProcessingJob.job == WAVEFORM.name
            )
        )
        derivative = session.scalar(
            select(MediaDerivative).where(
                MediaDerivative.media_id == media_id,
                MediaDerivative.type == DerivativeType.WAVEFORM,
            )
        )
        return (
            row and (row.state, row.flow_run_id, row.job_version),
            derivative and (derivative.storage_key, derivative.job_version),
        )


@pytest.mark.usefixtures("prefect_server")
def test_missing_then_outdated_waveforms_touch_only_their_media(production, tmp_path: Path):
    production["use"](WARM)
    production["start_worker"](limit=2)
    processed = voice_notes(tmp_path / "old", 2)
    runs = [run for m in processed for run in submit_media(m.id)]
    wait_for_runs(runs, timeout=120)
    before = {m.id: waveform_row(m.id) for m in processed}
    bare = voice_notes(tmp_path / "new", 3)  # registered, never processed

    started = start_backfill("generate-waveform", "missing")
    assert started["estimate"]["count"] == 3
    done = wait_for_backfill(started["id"])

    assert done["status"] == "DONE", done
    assert done["counts"] | {"estimated_cost": 0} == {
        "selected": 3,
        "submitted": 0,
        "done": 3,
        "failed": 0,
        "skipped": 0,
        "estimated_cost": 0,
    }
    assert {m.id: waveform_row(m.id) for m in processed} == before  # untouched
    root = get_settings().media_root
    for media in bare:
        (state, run, version), (key, made_by) = waveform_row(media.id)
        assert state is JobState.SUCCEEDED and version == made_by == WAVEFORM.version
        assert (root / key).stat().st_size > 100
        with session_scope() as session:  # only the job asked for: no transcription row
            jobs = session.scalars(
                select(ProcessingJob.job).where(ProcessingJob.media_id == media.id)
            ).all()
        assert jobs == [WAVEFORM.name]
    (shared,) = backfill_runs(started["id"])  # MEDIA_PIPELINE_BACKFILL_BATCH (4): one run
    assert shared.parameters["media_ids"] == [str(m.id) for m in bare]  # oldest first
    assert {f"media-{m.id}" for m in bare} <= set(shared.tags)

    # An older version made one of the first two: --outdated re-runs it alone, in place.
    stale = processed[0]
    with session_scope() as session:
        session.execute(
            update(ProcessingJob)
            .where(ProcessingJob.media_id == stale.id, ProcessingJob.job == WAVEFORM.name)
            .values(job_version=0)
        )
    key = before[stale.id][1][0]
    written = (root / key).stat().st_mtime_ns
    again = wait_for_backfill(start_backfill("generate-waveform", "outdated")["id"])

    assert again["counts"]["selected"] == again["counts"]["done"] == 1
    (state, run, version), (same_key, _) = waveform_row(stale.id)
    assert state is JobState.SUCCEEDED and version == WAVEFORM.version
    assert same_key == key and (root / key).stat().st_mtime_ns > written
    assert run != before[stale.id][0][1]  # the backfill's run made it
    assert waveform_row(processed[1].id) == before[processed[1].id]

    # Erasing a media of the shared run deletes its task run and results, not the run.
    task_runs = {t.name: t for t in shared_task_runs(shared.id)}
    assert len(task_runs) == 6  # each media's job and its webhook
    erased = [t for name, t in task_runs.items() if str(bare[0].id) in name]
    assert sorted(t.name.split(" · ")[0] for t in erased) == [WAVEFORM.name, "media-webhook"]
    result_file = result_path(next(t for t in erased if t.name.startswith(WAVEFORM.name)))
    assert result_file.is_file()
    (receipt,) = erase_media([bare[0].id])
    assert receipt["pending"] == {}, receipt
    assert receipt["removed"]["prefect"] | {"artifacts": 0} == {
        "runs": 0,
        "shared_runs": 1,
        "artifacts": 0,
        "results": 1,
    }
    assert not result_file.exists()
    left = shared_task_runs(shared.id)
    assert sorted(t.id for t in left) == sorted(t.id for t in task_runs.values() if t not in erased)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(shared.id).state.is_completed()


def shared_task_runs(flow_run_id: uuid.UUID) -> list:  # type: ignore[type-arg]
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )


def result_path(task_run) -> Path:  # type: ignore[no-untyped-def]
    """Where the task run's persisted result is (the results folder of the workers)."""
    with get_client(sync_client=True) as client:
        key = client.read_task_run(task_run.id).state.data.storage_key
    base = get_settings().storage.results_dir or Path(str(PREFECT_LOCAL_STORAGE_PATH.value()))
    return Path(key) if Path(key).is_absolute() else base / key


@pytest.mark.usefixtures("prefect_server", "fast_recovery")
def test_a_backfill_whose_worker_is_killed_goes_on_with_no_media_done_twice(
    production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MEDIA_PIPELINE_BACKFILL_IN_FLIGHT", "2")
    monkeypatch.setenv("MEDIA_PIPELINE_BACKFILL_BATCH", "2")
    get_settings.cache_clear()
    production["use"](WARM)
    media = photos(tmp_path, 8)
    victim = production["start_worker"](limit=2)
    started = start_backfill("generate-thumbnails", "missing")

    wait_until(lambda: get_backfill(started["id"])["counts"]["done"] >= 2, 90, "two photos done")
    os.killpg(victim.pid, signal.SIGKILL)  # the worker, its backfill run and its media runs
    time.sleep(1)
    production["start_worker"](limit=2)
    done = wait_for_backfill(started["id"], timeout=240)

    assert done["status"] == "DONE", done
    assert done["counts"]["done"] == 8 and done["counts"]["failed"] == 0
    runs = backfill_runs(started["id"])
    assert all(len(r.parameters["media_ids"]) == 2 for r in runs)
    batched = [media_id for r in runs for media_id in r.parameters["media_ids"]]
    assert sorted(batched) == sorted(str(m.id) for m in media)  # each in one run only
    with session_scope() as session:
        for item in media:
            kinds = session.scalars(
                select(MediaDerivative.type).where(MediaDerivative.media_id == item.id)
            ).all()
            assert sorted(kinds) == ["LARGE", "MEDIUM", "THUMBNAIL"]


@pytest.mark.usefixtures("prefect_server")
def test_a_cancelled_backfill_starts_no_more_runs(
    production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MEDIA_PIPELINE_BACKFILL_IN_FLIGHT", "1")
    monkeypatch.setenv("MEDIA_PIPELINE_BACKFILL_BATCH", "2")
    get_settings.cache_clear()
    production["use"](WARM)
    photos(tmp_path, 8)
    production["start_worker"](limit=2)
    started = start_backfill("generate-thumbnails", "missing")
    wait_until(lambda: get_backfill(started["id"])["counts"]["done"] >= 1, 90, "a photo done")

    assert cancel_backfill(started["id"])["status"] in ("CANCELLING", "CANCELLED")
    ended = wait_for_backfill(started["id"])

    counts = ended["counts"]
    assert ended["status"] == "CANCELLED"
    assert counts["done"] in (2, 4) and counts["skipped"] == 8 - counts["done"]
    time.sleep(2)
    assert len(backfill_runs(started["id"])) * 2 == counts["done"]  # none started afterwards
    assert get_backfill(started["id"])["status"] == BackfillStatus.CANCELLED.value


@pytest.mark.usefixtures("prefect_server")
def test_a_paced_backfill_submits_no_faster_than_its_pace(
    production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MEDIA_PIPELINE_BACKFILL_PER_MINUTE", "60")  # a media a second
    monkeypatch.setenv("MEDIA_PIPELINE_BACKFILL_BATCH", "1")
    get_settings.cache_clear()
    production["use"](WARM)
    photos(tmp_path, 6)
    production["start_worker"](limit=2)

    ended = wait_for_backfill(start_backfill("generate-thumbnails", "missing")["id"])

    assert ended["counts"]["done"] == 6, ended
    made = sorted(run.created for run in backfill_runs(ended["id"]))
    assert len(made) == 6
    # The first at once, then one a second, never two to catch up (unpaced, all six are
    # made in the first pass, within a second or two on a busy machine).
    assert (made[-1] - made[0]).total_seconds() >= 3.5


def test_a_backfill_of_media_of_another_type_is_refused(app_db):
    with pytest.raises(PermanentError, match="IMAGE"):
        Criteria(WAVEFORM, "missing", (), media_type=MediaType.IMAGE)


def test_on_the_embedded_default_a_key_set_later_transcribes_the_old_voice_notes(
    tmp_path: Path, fake_providers
):
    """The demo's SKIPPED transcription says to set OPENAI_API_KEY; once it is set, one
    command transcribes the voice notes processed before, through the local service."""
    data = tmp_path / "data"
    keys = embedded_env(data)
    without_keys = {k: v for k, v in keys.items() if not k.startswith(("OPENAI_", "GEMINI_"))}
    note = make_voice_note(tmp_path / "voice.m4a", 4, codec_args=("-c:a", "aac"))
    try:
        first = cli(without_keys, "process", str(note), "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        assert job_state(json.loads(first.stdout), "transcribe-audio") == "SKIPPED"

        dry = cli(keys, "backfill", "--job", "transcribe-audio", "--missing", "--dry-run")
        assert dry.returncode == 0 and "1 media" in dry.stdout and "openai" in dry.stdout
        started = cli(keys, "backfill", "--job", "transcribe-audio", "--missing", "--json")
        assert started.returncode == 0, started.stderr[-2000:]
        backfill_id = json.loads(started.stdout)["id"]
        status: dict = {}

        def ended() -> bool:
            shown = cli(keys, "backfill-status", backfill_id, "--json")
            status.update(json.loads(shown.stdout))
            return status["status"] == "DONE"

        wait_until(ended, 240, "the backfill to end", interval=1)
        assert status["counts"]["done"] == 1 and status["counts"]["estimated_cost"] > 0
        assert len(fake_providers.calls("openai")) == 1
        media_id = json.loads(first.stdout)["media_id"]
        with sqlite3.connect(data / "media-pipeline.db") as db:
            query = "SELECT version, is_active, job_version FROM transcription WHERE media_id = ?"
            rows = db.execute(query, (media_id.replace("-", ""),)).fetchall()
        assert rows == [(1, 1, 1)]
        refused = cli(keys, "backfill", "--job", "transcribe-audio")
        assert refused.returncode == 2 and "choose one of" in refused.stderr
    finally:
        cli(keys, "server", "stop")


def job_state(summary: dict, name: str) -> str:
    return next(j["state"] for j in summary["jobs"] if j["job"] == name)


@pytest.mark.usefixtures("prefect_server")
def test_running_a_job_again_replaces_its_outputs_in_place(production, tmp_path: Path):
    """A new transcription version (the old one kept, inactive); the enhanced copy's file and
    its thumbnails replaced under the same media and keys."""
    production["use"](WARM)
    production["start_worker"](limit=2)
    photo = register_media(make_jpeg(tmp_path / "portrait.jpg", 900, 1200, seed=3), category="DISP")
    note = register_media(make_voice_note(tmp_path / "note.m4a", 3, codec_args=("-c:a", "aac")))
    wait_for_runs([run for m in (photo, note) for run in submit_media(m.id)], timeout=120)
    copy, copy_files = wait_for_enhanced_copy(photo.id, after=None)

    for job_name in ("ai-enhancement", "transcribe-audio"):
        ended = wait_for_backfill(start_backfill(job_name, "all")["id"])
        assert ended["counts"]["done"] == 1, ended

    again, again_files = wait_for_enhanced_copy(photo.id, after=copy_files)
    assert again == copy  # the same media, the same keys, new files
    assert set(again_files) == set(copy_files)
    with session_scope() as session:
        versions = session.execute(
            select(Transcription.version, Transcription.is_active)
            .where(Transcription.media_id == note.id)
            .order_by(Transcription.version)
        ).all()
    assert versions == [(1, False), (2, True)]


def wait_for_enhanced_copy(
    source_id: uuid.UUID, after: dict[str, int] | None
) -> tuple[tuple[uuid.UUID, str], dict[str, int]]:
    """The enhanced copy (id, key) once it is READY with its thumbnails, all of its files
    written after ``after`` (their mtimes) when given; its files' mtimes."""
    root = get_settings().media_root
    found: dict = {}

    def ready() -> bool:
        with session_scope() as session:
            copy = session.scalar(select(Media).where(Media.source_media_id == source_id))
            if copy is None or copy.status is not MediaStatus.READY or len(copy.derivatives) != 3:
                return False
            keys = [copy.storage_key, *(d.storage_key for d in copy.derivatives)]
            found["copy"] = (copy.id, copy.storage_key)
        found["files"] = {key: (root / key).stat().st_mtime_ns for key in keys}
        return after is None or all(found["files"][k] > after.get(k, 0) for k in found["files"])

    wait_until(ready, 120, "the enhanced copy and its thumbnails", interval=0.5)
    return found["copy"], found["files"]
