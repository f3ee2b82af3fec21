"""Faults of the orchestrator or of a provider are never a media's failure (short versions
of the drills in benchmarks/drills.py), on a Prefect server of this module's own that the
tests kill and start again: the Prefect server killed while photos wait for their slots, a
flow run's process killed, a slow provider beside photos, ``complete`` during an outage."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select

from db.models import Media, MediaStatus, ProcessingJob
from db.session import session_scope
from deployments.operations.registration import register_media
from deployments.operations.run_health import MARK
from deployments.worker.warm import WORKER_TYPE as WARM
from flows.submission import submit_media
from media_pipeline.settings import get_settings
from tests.support.api import start_api, upload
from tests.support.databases import scratch_database
from tests.support.media import make_jpeg, make_tone
from tests.support.processes import free_port, stop_process, wait_until
from tests.support.production import wait_for_runs
from tests.support.services import PrivateRedis, start_prefect_server

OUTAGE = 30.0  # seconds the Prefect server stays away


class RestartablePrefect:
    """A Prefect server on PostgreSQL with Redis messaging, on a port it keeps across
    restarts."""

    def __init__(self, database: str, redis_url: str, folder: Path) -> None:
        self.database, self.redis_url, self.folder = database, redis_url, folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = self.folder / f"prefect-server-{self.starts}.log"
        self.starts += 1
        self.process = start_prefect_server(self.database, self.redis_url, log, self.port)

    def kill(self) -> None:
        """``kill -9`` of the server's process group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture(scope="module")
def own_server(
    postgres: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RestartablePrefect]:
    folder = tmp_path_factory.mktemp("faults-prefect")
    redis = PrivateRedis(folder / "redis").start()
    try:
        with scratch_database("mp_faults") as name:
            server = RestartablePrefect(
                f"postgresql+asyncpg://root@127.0.0.1:5432/{name}", redis.url, folder
            )
            server.start()
            try:
                yield server
            finally:
                server.stop()
    finally:
        redis.close()


@pytest.fixture
def prefect_server(
    own_server: RestartablePrefect, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """This module's server in place of the session's (which no test may kill)."""
    monkeypatch.setenv("PREFECT_API_URL", own_server.url)
    monkeypatch.setenv("MEDIA_PIPELINE_RECONCILE_SECONDS", "1")
    get_settings.cache_clear()
    with temporary_settings(updates={PREFECT_API_URL: own_server.url}):
        yield own_server.url


def media_rows(media: list[Media]) -> dict[uuid.UUID, tuple[MediaStatus, dict[str, int]]]:
    """Status, and attempts per job, of each media."""
    with session_scope() as session:
        rows = session.scalars(
            select(ProcessingJob).where(ProcessingJob.media_id.in_([m.id for m in media]))
        )
        attempts: dict[uuid.UUID, dict[str, int]] = {}
        for row in rows:
            attempts.setdefault(row.media_id, {})[row.job] = row.attempts
        return {m.id: (session.get(Media, m.id).status, attempts.get(m.id, {})) for m in media}


def in_flight(run_ids: list[str]) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(uuid.UUID(r)) for r in run_ids]
    return [r for r in runs if r.state.type in (StateType.PENDING, StateType.RUNNING)]


def reconciler_states(run_id: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(run_id))
    return [
        s for s in states if s.type is StateType.SCHEDULED and (s.message or "").startswith(MARK)
    ]


def test_a_prefect_server_restart_fails_no_healthy_photo(
    production, own_server: RestartablePrefect, tmp_path: Path
):
    production["use"](WARM)
    photos = [
        register_media(make_jpeg(tmp_path / f"p{i}.jpg", 4000, 3000, seed=i), category="AUTRE")
        for i in range(5)
    ]
    run_ids = [run for photo in photos for run in submit_media(str(photo.id))]
    production["start_worker"](limit=1)  # one slot: four photos wait for it
    wait_until(lambda: in_flight(run_ids), 90, "a thumbnail run in flight", interval=0.2)

    own_server.kill()
    time.sleep(OUTAGE)
    own_server.start()
    final = {MediaStatus.READY, MediaStatus.PARTIAL, MediaStatus.FAILED}
    wait_until(
        lambda: {s for s, _ in media_rows(photos).values()} <= final,
        240,
        "every photo to be final",
        interval=1,
    )

    rows = media_rows(photos)
    assert {status for status, _ in rows.values()} == {MediaStatus.READY}, rows
    assert all(jobs == {"generate-thumbnails": 1} for _, jobs in rows.values()), rows


def test_one_killed_flow_run_process_is_one_recovery(production, tmp_path: Path):
    production["use"](WARM)
    production["providers"].latency = 4.0  # the transcription is in flight for a while
    note = register_media(
        make_tone(tmp_path / "note.m4a", 2.0, codec_args=("-c:a", "aac")), category="AUTRE"
    )
    run_id = submit_media(str(note.id))[0]  # the transcription's run (high)
    production["start_worker"](limit=1)
    wait_until(
        lambda: in_flight([run_id]) and in_flight([run_id])[0].infrastructure_pid,
        90,
        "the transcription's process",
    )
    child = int(str(in_flight([run_id])[0].infrastructure_pid).rsplit(":", 1)[-1])
    time.sleep(1.0)  # into the provider call
    os.kill(child, signal.SIGKILL)  # the flow run's process alone; the worker lives
    wait_until(
        lambda: media_rows([note])[note.id][0] is MediaStatus.READY,
        120,
        "the voice note to be READY",
        interval=1,
    )

    (run,) = wait_for_runs([run_id], timeout=60).values()
    assert run.state.type is StateType.COMPLETED
    assert len(reconciler_states(run_id)) == 1  # one fault, one recovery
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(run_id))
    crashes = [s for s in states if s.type is StateType.CRASHED and MARK not in (s.message or "")]
    assert len(crashes) == 1, [(s.name, s.message) for s in states]  # reported once


def test_a_slow_provider_does_not_hold_the_slots_of_photos(production, tmp_path: Path):
    production["use"](WARM)
    production["providers"].latency = 40.0
    notes = [
        register_media(
            make_tone(tmp_path / f"a{i}.m4a", 2.0, codec_args=("-c:a", "aac")), category="AUTRE"
        )
        for i in range(3)
    ]
    transcriptions = [submit_media(str(n.id))[0] for n in notes]
    production["start_worker"](limit=1)  # one CPU slot, four provider slots by default
    wait_until(lambda: len(in_flight(transcriptions)) == 3, 90, "three transcriptions")
    began = time.monotonic()
    photos = [
        register_media(make_jpeg(tmp_path / f"p{i}.jpg", 1600, 1200, seed=i), category="AUTRE")
        for i in range(3)
    ]
    wait_for_runs([r for p in photos for r in submit_media(str(p.id))], timeout=60)

    assert time.monotonic() - began < 30  # well before the provider answers
    assert {status for status, _ in media_rows(photos).values()} == {MediaStatus.READY}
    assert len(in_flight(transcriptions)) == 3  # still waiting on the provider


def test_complete_answers_within_its_bound_while_prefect_is_away(
    production, own_server: RestartablePrefect, tmp_path: Path
):
    production["use"](WARM)
    token = "faults-token-0123456789"
    process, base = start_api(
        tmp_path / "api.log",
        MEDIA_PIPELINE_API_TOKENS=token,
        MEDIA_PIPELINE_SUBMIT_WAIT_SECONDS="3",
    )
    photo = make_jpeg(tmp_path / "photo.jpg", 1600, 1200)
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            media_id, complete = upload(client, photo, "IMAGE")
            own_server.kill()
            began = time.monotonic()
            answer = client.post(complete)
            waited = time.monotonic() - began
            own_server.start()

            assert answer.status_code == 503, answer.text
            assert waited < 3 + 2
            assert answer.headers["Retry-After"] == "3"
            assert answer.json()["error"]["code"] == "prefect_unavailable"
            with session_scope() as session:  # accepted and planned, not lost
                media = session.get(Media, media_id)
                assert media.status is not MediaStatus.AWAITING_UPLOAD
                assert [job.job for job in media.jobs] == ["generate-thumbnails"]

            answers: list[httpx.Response] = []

            def accepted() -> bool:  # as a client does, after Retry-After
                answers.append(client.post(complete))
                return answers[-1].status_code == 202

            wait_until(accepted, 120, "complete to be accepted", interval=3)
            assert {a.status_code for a in answers} <= {202, 503}
            runs = answers[-1].json()["runs"]
            assert len(runs) == 1 and client.post(complete).json()["runs"] == runs
    finally:
        stop_process(process)
