"""Fault drills on real processes (short versions of benchmarks/drills.py): a worker killed
with runs in flight, the app database restarted, a worker stopped by SIGTERM, a backlog,
concurrent submissions. Each asserts the invariant: every submitted media reaches a final
status with no human action, and its outputs are written once."""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from sqlalchemy import select

from db.migrate import upgrade
from db.models import JobState, Media, MediaStatus, ProcessingJob, Transcription
from db.repository import load_media
from db.session import get_engine, session_scope
from deployments.operations.reconciler import Reconciler
from deployments.operations.registration import register_media
from deployments.operations.run_health import MARK
from deployments.worker.warm import WORKER_TYPE as WARM
from flows.submission import submit_media
from media_pipeline.settings import get_settings
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import start_process, wait_until
from tests.support.production import wait_for_runs
from tests.support.services import PrivatePostgres

pytestmark = pytest.mark.usefixtures("prefect_server")

EXPECTED_FILES = {
    "IMAGE": ["original.jpg", "{id}-large.jpg", "{id}-medium.jpg", "{id}-thumbnail.jpg"],
    "AUDIO": ["original.m4a", "{id}-waveform.json", "{id}-waveform.svg"],
    "VIDEO": ["original.mp4", "{id}-preview.mp4", "{id}-thumbnail.jpg"],
}
DERIVATIVES = {"IMAGE": 3, "AUDIO": 1, "VIDEO": 2}


def mixed_media(folder: Path, count: int) -> list[Media]:
    """Voice notes, photos and videos in turn."""
    made = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            path = make_tone(folder / f"a{i}.m4a", 2.0, codec_args=("-c:a", "aac"))
        elif kind == 1:
            path = make_jpeg(folder / f"p{i}.jpg", 1600, 1200, seed=i)
        else:
            path = make_video(folder / f"v{i}.mp4", 3)
        made.append(register_media(path, category="AUTRE"))
    return made


def assert_processed_once(media: list[Media]) -> None:
    """Every media READY, one derivative row per type, exactly the expected files, one
    transcription version per voice note."""
    root = get_settings().media_root
    with session_scope() as session:
        for item in media:
            stored = load_media(session, item.id)
            kind = stored.type.value
            assert stored.status is MediaStatus.READY, (kind, stored.status_message)
            assert len(stored.derivatives) == DERIVATIVES[kind]
            folder = root / f"alerts/{stored.alert_id}/media/{stored.id}"
            names = sorted(p.name for p in folder.iterdir())
            assert names == sorted(n.format(id=stored.id) for n in EXPECTED_FILES[kind])
            versions = session.query(Transcription).filter_by(media_id=stored.id).count()
            assert versions == (1 if kind == "AUDIO" else 0)


def running_runs_of(worker: str, run_ids: list[str]) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(uuid.UUID(r)) for r in run_ids]
    return [
        r
        for r in runs
        if r.state.type in (StateType.PENDING, StateType.RUNNING)
        and r.labels.get("prefect.worker.name") == worker
    ]


def recovered(run_ids: list[str]) -> list[str]:
    """The runs the reconciler scheduled again."""
    with get_client(sync_client=True) as client:
        return [
            r
            for r in run_ids
            if any(
                (s.message or "").startswith(MARK)
                for s in client.read_flow_run_states(uuid.UUID(r))
            )
        ]


@pytest.mark.usefixtures("fast_recovery")
def test_runs_of_a_killed_worker_are_run_again_by_themselves(production, tmp_path: Path):
    production["use"](WARM)
    production["providers"].latency = 3.0  # transcriptions are in flight for a while
    media = mixed_media(tmp_path, 9)
    run_ids = [run for m in media for run in submit_media(m.id)]
    victim = production["start_worker"](limit=3)
    production["start_worker"](limit=3)

    wait_until(
        lambda: len(running_runs_of("test-worker-0", run_ids)) >= 2,
        90,
        "the first worker to have runs in flight",
    )
    os.killpg(victim.pid, signal.SIGKILL)  # the worker, its warm interpreter, its runs
    killed_at = time.monotonic()
    runs = wait_for_runs(run_ids, timeout=180)

    assert {r.state.name for r in runs.values()} == {"Completed"}
    assert time.monotonic() - killed_at < 120
    assert recovered(run_ids), "no run needed the reconciler"
    assert_processed_once(media)


@pytest.fixture
def private_app_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivatePostgres]:
    """The app database on a PostgreSQL cluster of its own, which the test may restart."""
    cluster = PrivatePostgres().start()
    try:
        cluster.create_database("app")
        url = cluster.url("app")
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()
        upgrade(url)
        yield cluster
        get_engine(url).dispose()
    finally:
        cluster.close()


@pytest.mark.usefixtures("fast_recovery")
def test_media_reach_a_final_status_across_an_app_database_restart(
    production, private_app_db: PrivatePostgres, tmp_path: Path
):
    production["use"](WARM)
    production["providers"].latency = 2.0
    media = mixed_media(tmp_path, 9)
    run_ids = [run for m in media for run in submit_media(m.id)]
    production["start_worker"](limit=3)
    production["start_worker"](limit=3)

    def in_flight() -> int:
        return sum(len(running_runs_of(f"test-worker-{i}", run_ids)) for i in range(2))

    wait_until(lambda: in_flight() >= 3, 90, "runs in flight")
    private_app_db.restart()  # pg_ctl -m fast restart: every connection is cut
    runs = wait_for_runs(run_ids, timeout=180)

    assert {r.state.name for r in runs.values()} == {"Completed"}
    assert_processed_once(media)


@pytest.mark.usefixtures("fast_recovery")
def test_sigterm_stops_a_worker_gracefully_whatever_it_inherited(
    production, monkeypatch, tmp_path: Path
):
    production["use"](WARM)
    production["providers"].latency = 8.0  # longer than the grace period
    monkeypatch.setenv("MEDIA_PIPELINE_WORKER_GRACE_SECONDS", "2")
    notes = [
        register_media(
            make_tone(tmp_path / f"a{i}.m4a", 2.0, codec_args=("-c:a", "aac")), category="AUTRE"
        )
        for i in range(4)
    ]
    # The transcriptions alone, two at once: they wait on the provider, in provider slots.
    run_ids = [run for m in notes for run in submit_media(m.id, jobs=["transcribe-audio"])]
    # A background job of a shell script: SIGINT ignored, which used to swallow SIGTERM.
    worker = production["start_worker"](
        limit=1, ignore_sigint=True, MEDIA_PIPELINE_WORKER_PROVIDER_LIMIT="2"
    )
    wait_until(lambda: len(running_runs_of("test-worker-0", run_ids)) == 2, 90, "two runs")
    in_flight = {str(r.id) for r in running_runs_of("test-worker-0", run_ids)}

    worker.send_signal(signal.SIGTERM)  # the worker only, as `kill PID` or a supervisor
    stopped_at = time.monotonic()
    assert worker.wait(2 + 5) == 0
    assert time.monotonic() - stopped_at < 2 + 5
    with get_client(sync_client=True) as client:
        states = {r: client.read_flow_run(uuid.UUID(r)).state for r in run_ids}
    # What was in flight went back to its queue; nothing else was claimed.
    assert all(s.type is StateType.SCHEDULED for s in states.values())
    handed = {r for r, s in states.items() if "Handed back by worker" in (s.message or "")}
    assert handed == in_flight

    production["start_worker"](limit=2)  # its replacement
    runs = wait_for_runs(run_ids, timeout=120)
    assert {r.state.name for r in runs.values()} == {"Completed"}
    with session_scope() as session:  # each transcribed once, by one run
        for note in notes:
            assert load_media(session, note.id).status is MediaStatus.READY
            assert session.query(Transcription).filter_by(media_id=note.id).count() == 1


def claimed_at(run_id: str) -> Any:
    """When a worker claimed the run (its first Pending state)."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(run_id))
    return min(s.timestamp for s in states if s.type is StateType.PENDING)


def test_priorities_hold_under_a_backlog(production, tmp_path: Path):
    production["use"](WARM)
    notes = [
        register_media(make_tone(tmp_path / f"a{i}.wav", 1.0), category="AUTRE") for i in range(8)
    ]
    photos = [
        register_media(make_jpeg(tmp_path / f"p{i}.jpg", 800, 600, seed=i), category="AUTRE")
        for i in range(3)
    ]
    runs_of = {m.id: submit_media(m.id) for m in notes + photos}
    high = [runs[0] for runs in runs_of.values()]  # transcriptions and thumbnails
    low = [runs_of[m.id][1] for m in notes]  # waveforms

    # Started as the README says: no --limit, the CPU count by default.
    production["start_worker"]()
    production["start_worker"]()
    wait_for_runs(high + low, timeout=180)

    # Transcriptions wait in provider slots of their own (#29): a free CPU slot may take a
    # waveform while a transcription waits for one. Within a kind of slot, priority holds.
    last_high = max(claimed_at(runs_of[p.id][0]) for p in photos)  # thumbnails: CPU slots
    assert all(claimed_at(r) > last_high for r in low)


def test_concurrent_submissions_get_the_same_runs(production, tmp_path: Path):
    production["use"](WARM)
    media = [
        register_media(make_jpeg(tmp_path / f"p{i}.jpg", 800, 600, seed=i), category="AUTRE")
        for i in range(3)
    ]

    # Ten callers of each media at once (each thread in a copy of this test's context,
    # where the Prefect API URL is set).
    with ThreadPoolExecutor(30) as pool:
        calls = {
            m.id: [
                pool.submit(contextvars.copy_context().run, submit_media, m.id) for _ in range(10)
            ]
            for m in media
        }
        answers = {media_id: [c.result() for c in made] for media_id, made in calls.items()}

    for runs in answers.values():
        assert len({tuple(r) for r in runs}) == 1 and len(runs[0]) == 1
    # Named and tagged at creation: a waiting run is found by its media, alert or job.
    with get_client(sync_client=True) as client:
        waiting = client.read_flow_run(uuid.UUID(answers[media[0].id][0][0]))
    assert waiting.name == f"media · {str(media[0].id)[:8]} · high"
    assert {f"media-{media[0].id}", f"alert-{media[0].alert_id}", "job-generate-thumbnails"} <= set(
        waiting.tags
    )
    production["start_worker"]()
    wait_for_runs([r for runs in answers.values() for r in runs[0]], timeout=120)
    assert_processed_once(media)


def test_the_queue_board_counts_queues_jobs_and_paused_queues(production, tmp_path: Path):
    from deployments.operations.queue_board import BOARD_KEY, publish_queue_board

    production["use"](WARM)
    with get_client(sync_client=True) as client:
        low = next(q for q in client.read_work_queues(work_pool_name="media") if q.name == "low")
        client.update_work_queue(low.id, is_paused=True)
    try:
        notes = [
            register_media(make_tone(tmp_path / f"a{i}.wav", 1.0), category="AUTRE")
            for i in range(2)
        ]
        runs = {m.id: submit_media(m.id) for m in notes}
        production["start_worker"]()
        wait_for_runs([r[0] for r in runs.values()], timeout=120)  # the transcriptions

        content = publish_queue_board()
        hour = content["last_hour"]
        assert hour["low"]["paused"] and not hour["high"]["paused"]
        assert hour["low"]["waiting"] >= 2 and hour["low"]["oldest_waiting_seconds"] > 0
        for count in ("waiting", "active", "completed", "failed", "delayed", "total"):
            assert hour["all"][count] == sum(hour[q][count] for q in hour if q != "all")
        assert content["by_job_and_type_last_day"]["job transcribe-audio"]["completed"] >= 2
        with get_client(sync_client=True) as client:
            artifact = client.read_latest_artifacts(limit=200)
        (board,) = [a for a in artifact if a.key == BOARD_KEY]
        assert "| low |" in board.data and "**paused**" in board.data
    finally:
        with get_client(sync_client=True) as client:
            client.update_work_queue(low.id, is_paused=False)
    wait_for_runs([r[1] for r in runs.values()], timeout=120)  # unpaused: the waveforms run


@pytest.mark.usefixtures("fast_recovery")
def test_a_killed_process_command_leaves_its_media_failed_not_processing(
    prefect_server: str, postgres_app_db: str, fake_providers, tmp_path: Path
):
    """``media-pipeline process`` runs the flow in its own process, with no worker to
    report its death: the reconciler sees its run fall silent."""
    fake_providers.latency = 60.0  # the transcription is in flight when the command dies
    note = make_tone(tmp_path / "note.m4a", 2.0, codec_args=("-c:a", "aac"))
    command = start_process(
        [str(Path(sys.executable).parent / "media-pipeline"), "process", str(note)],
        {**os.environ, "PREFECT_API_URL": prefect_server},
        tmp_path / "process.log",
    )

    def transcribing() -> bool:
        with session_scope() as session:
            return (
                session.scalar(
                    select(ProcessingJob).where(
                        ProcessingJob.job == "transcribe-audio",
                        ProcessingJob.state == JobState.RUNNING,
                    )
                )
                is not None
            )

    try:
        wait_until(transcribing, 120, "the command to be transcribing")
    finally:
        os.killpg(command.pid, signal.SIGKILL)
        command.wait(10)
    reconciler = Reconciler()

    def failed() -> bool:
        reconciler.run_pass()
        with session_scope() as session:
            return session.scalar(select(Media)).status is MediaStatus.FAILED

    wait_until(failed, 90, "the reconciler to end the silent run", interval=1)
    with session_scope() as session:
        media = session.scalar(select(Media))
        jobs = {job.job: job for job in media.jobs}
        run_id = jobs["transcribe-audio"].flow_run_id
        assert jobs["transcribe-audio"].state is JobState.FAILED
        assert "no heartbeat from the run" in media.status_message
        assert f"media-pipeline submit --reprocess {media.id}" in media.status_message
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(uuid.UUID(run_id)).state.type is StateType.CRASHED
