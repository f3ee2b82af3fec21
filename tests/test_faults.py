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
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select

from db.models import Media, MediaDerivative, MediaStatus, ProcessingJob
from db.session import session_scope
from deployments.operations.queue_board import outbox_summary
from deployments.operations.registration import register_media
from deployments.operations.run_health import MARK
from deployments.worker.warm import WORKER_TYPE as WARM
from flows.submission import submit_media
from media_pipeline.settings import get_settings
from tests.support.api import SCRIPT, start_api, upload
from tests.support.databases import scratch_database
from tests.support.embedded import cli
from tests.support.media import make_jpeg, make_tone
from tests.support.processes import free_port, http_ok, start_process, stop_process, wait_until
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
    run_ids = [run for photo in photos for run in submit_media(photo.id)]
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
    run_id = submit_media(note.id)[0]  # the transcription's run (high)
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
    transcriptions = [submit_media(n.id)[0] for n in notes]
    production["start_worker"](limit=1)  # one CPU slot, four provider slots by default
    wait_until(lambda: len(in_flight(transcriptions)) == 3, 90, "three transcriptions")
    began = time.monotonic()
    photos = [
        register_media(make_jpeg(tmp_path / f"p{i}.jpg", 1600, 1200, seed=i), category="AUTRE")
        for i in range(3)
    ]
    wait_for_runs([r for p in photos for r in submit_media(p.id)], timeout=60)

    assert time.monotonic() - began < 30  # well before the provider answers
    assert {status for status, _ in media_rows(photos).values()} == {MediaStatus.READY}
    assert len(in_flight(transcriptions)) == 3  # still waiting on the provider


def test_uploads_completed_while_prefect_is_away_are_processed_when_it_is_back(
    production, own_server: RestartablePrefect, tmp_path: Path
):
    production["use"](WARM)
    production["start_worker"]()
    token = "faults-token-0123456789"
    process, base = start_api(
        tmp_path / "api.log",
        MEDIA_PIPELINE_API_TOKENS=token,
        MEDIA_PIPELINE_RELAY_POLL_SECONDS="0.5",
    )
    photo = make_jpeg(tmp_path / "photo.jpg", 800, 600)
    alert = uuid.uuid4()
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            uploaded = [upload(client, photo, "IMAGE", alert) for _ in range(20)]
            own_server.kill()
            answers: list[tuple[int, float]] = []
            for _, path in uploaded:
                began = time.monotonic()
                code = client.post(path).status_code
                answers.append((code, time.monotonic() - began))
            assert [code for code, _ in answers] == [202] * 20  # accepted: Prefect not asked
            assert max(seconds for _, seconds in answers) < 2

            def backlog_seen() -> bool:  # what an operator sees: the backlog, and why
                summary = outbox_summary()
                return summary["runs"] == 20 and summary["failing"] >= 1

            wait_until(backlog_seen, 30, "the relay to find Prefect away")
            stats = cli(dict(os.environ), "stats")
            assert stats.stdout.startswith("Outbox: 20 planned runs not created yet"), stats
            assert "failed to be created so far, the oldest because: " in stats.stdout, stats
            port = free_port()
            metrics = start_process(
                [SCRIPT, "metrics", "--port", str(port)], dict(os.environ), tmp_path / "m.log"
            )
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                wait_until(lambda: http_ok(url), 60, "the metrics server")
                text = httpx.get(url, timeout=120).text
            finally:
                stop_process(metrics)
            assert "media_pipeline_outbox_runs 20.0" in text
            assert "media_pipeline_prefect_up 0.0" in text
            own_server.start()

            media = [m for m, _ in uploaded]
            wait_until(lambda: all_ready(media), 240, "every photo READY", interval=1)
            again = client.post(uploaded[0][1]).json()
        runs: list[Any] = []

        def runs_completed() -> bool:  # the media is READY a moment before its run ends
            with get_client(sync_client=True) as prefect:
                runs[:] = prefect.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"alert-{alert}"]))
                )
            return all(run.state and run.state.type is StateType.COMPLETED for run in runs)

        wait_until(runs_completed, 60, "the runs to complete")
        assert outbox_summary()["runs"] == 0
        tags = [f"media-{m}" for m in media]
        made = [next(t for t in run.tags if t in tags) for run in runs]
        assert sorted(made) == sorted(tags)  # one run each, made once
        created = dict(zip(made, [run.created for run in runs], strict=True))
        in_acceptance_order = [created[tag] for tag in tags]
        assert in_acceptance_order == sorted(in_acceptance_order)  # made in that order
        with session_scope() as session:
            derivatives = session.scalars(
                select(MediaDerivative.media_id).where(MediaDerivative.media_id.in_(media))
            ).all()
        assert sorted(Counter(derivatives).values()) == [3] * 20  # one set of outputs each
        assert again["runs"] and again["jobs"][0]["runId"] == again["runs"][0]
    finally:
        stop_process(process)


def all_ready(media: list[uuid.UUID]) -> bool:
    with session_scope() as session:
        statuses = session.scalars(select(Media.status).where(Media.id.in_(media))).all()
    return len(statuses) == len(media) and set(statuses) == {MediaStatus.READY}
