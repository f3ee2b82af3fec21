"""The production profile end to end: Prefect server on PostgreSQL with Redis messaging,
``media-pipeline setup``, stock process workers pulling runs, the client API."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from db.models import JobState, MediaStatus
from db.repository import load_media
from db.session import session_scope
from deployments.client_api import get_job_status, get_queue_stats, retry_failed, submit_media
from deployments.setup import setup
from media_pipeline.registration import register_media
from media_pipeline.settings import get_settings
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import start_process, stop_process, wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")


class Receiver:
    """A local HTTP endpoint that records the callbacks it is sent."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.bodies.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/media-done"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def production(prefect_server, postgres_app_db, fake_providers, tmp_path, monkeypatch
               ) -> Iterator[dict]:  # fmt: skip
    """Set-up done, a callback receiver, and a way to start workers (stopped at the end)."""
    receiver = Receiver()
    monkeypatch.setenv("MEDIA_PIPELINE_CALLBACK_URL", receiver.url)
    monkeypatch.setenv("MEDIA_PIPELINE_CALLBACK_SECRET", "callback-secret")
    monkeypatch.setenv("MEDIA_ROOT", str(tmp_path / "shared-media"))
    monkeypatch.setenv("MEDIA_PIPELINE_REDIS_URL", "redis://127.0.0.1:6379/7")  # job locks
    get_settings.cache_clear()
    setup()
    workers: list = []

    def start_worker(limit: int | None = None, **extra_env: str) -> None:
        env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PREFECT_WORKER_PREFETCH_SECONDS": "0", **extra_env}  # fmt: skip
        args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "media",
                "--type", "process", "--name", f"test-worker-{len(workers)}"]  # fmt: skip
        if limit:
            args += ["--limit", str(limit)]
        log = tmp_path / f"worker-{len(workers)}.log"
        workers.append(start_process(args, env, log))

    def stop_workers() -> None:
        while workers:
            stop_process(workers.pop())

    try:
        yield {"start_worker": start_worker, "stop_workers": stop_workers, "receiver": receiver,
               "logs": tmp_path}  # fmt: skip
    finally:
        stop_workers()
        receiver.stop()


def wait_for_runs(run_ids: list[str], timeout: float = 300) -> dict[str, Any]:
    """Every run final (Completed, Failed, Crashed...), as the server records them."""
    ids = [uuid.UUID(r) for r in run_ids]
    runs: dict[str, Any] = {}

    def done() -> bool:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
            )
        runs.update({str(r.id): r for r in found})
        return len(found) == len(ids) and all(r.state and r.state.is_final() for r in found)

    wait_until(done, timeout, f"{len(ids)} flow runs to finish", interval=1)
    return runs


def task_runs(run_ids: list[str]) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(r) for r in run_ids]))
        )


def test_a_dozen_media_processed_by_two_workers(production, tmp_path: Path):
    files = [make_jpeg(tmp_path / f"p{i}.jpg", 1200, 900, orientation=6) for i in range(4)]
    files += [make_tone(tmp_path / f"a{i}.m4a", 3.0, codec_args=("-c:a", "aac")) for i in range(4)]
    files += [make_video(tmp_path / f"v{i}.mp4", 3) for i in range(4)]
    media = [register_media(f, category="DISP" if i == 0 else "AUTRE") for i, f in enumerate(files)]

    before = get_queue_stats()  # the session's server has other tests' runs too
    run_ids = [run for m in media for run in submit_media(str(m.id))]
    assert submit_media(str(media[0].id)) == run_ids[:2]  # idempotent: the same runs
    waiting = get_queue_stats()
    assert waiting["all"]["waiting"] - before["all"]["waiting"] == len(run_ids)
    assert waiting["all"]["total"] - before["all"]["total"] == len(run_ids)
    production["start_worker"]()
    production["start_worker"]()
    runs = wait_for_runs(run_ids)

    assert {r.state.name for r in runs.values()} == {"Completed"}
    queues = {r.parameters["tier"]: r.work_queue_name for r in runs.values()}
    assert queues == {"high": "high", "normal": "normal", "low": "low"}
    root = get_settings().media_root
    with session_scope() as session:
        for item in media:
            stored = load_media(session, item.id)
            assert stored.status is MediaStatus.READY, (stored.type, stored.status_message)
            assert all(job.state is JobState.SUCCEEDED for job in stored.jobs)
            for derivative in stored.derivatives:
                assert (root / derivative.storage_key).stat().st_size == derivative.bytes
        kinds = {load_media(session, m.id).type.value: len(load_media(session, m.id).derivatives)
                 for m in media[1:]}  # fmt: skip
    assert kinds == {"IMAGE": 3, "AUDIO": 1, "VIDEO": 2}

    status = get_job_status(run_ids[0])
    assert status["state"] == "Completed" and status["progress"] == 100
    assert status["jobs"] == [
        {"job": "generate-thumbnails", "state": "SUCCEEDED", "attempts": 1, "error": None}
    ]
    after = get_queue_stats()
    gained = {q: {k: after[q][k] - before[q][k] for k in after[q]} for q in after}
    # One more run than submitted: the enhanced portrait's thumbnails ran as a subflow.
    assert gained["all"]["completed"] == len(run_ids) + 1 and gained["all"]["failed"] == 0
    assert (gained["high"]["completed"], gained["normal"]["completed"],
            gained["low"]["completed"]) == (8, 5, 4)  # fmt: skip
    assert gained["all"]["waiting"] == gained["all"]["active"] == 0

    receiver = production["receiver"]
    wait_until(lambda: len(receiver.bodies) >= len(media) + 1, 30, "callbacks")
    headers, body = receiver.bodies[0]
    expected = hmac.new(b"callback-secret", body, hashlib.sha256).hexdigest()
    assert headers["x-media-pipeline-signature"] == f"sha256={expected}"
    announced = {json.loads(b)["media_id"] for _, b in receiver.bodies}
    assert {str(m.id) for m in media} <= announced


def test_failed_run_is_retried_without_redoing_finished_jobs(production, tmp_path: Path):
    video = register_media(make_video(tmp_path / "v.mp4", 3), category="AUTRE")
    # A broken worker set-up: ffmpeg may not run for more than a millisecond.
    production["start_worker"](MEDIA_PIPELINE_FFMPEG_TIMEOUT_SECONDS="0.001")
    (run_id,) = submit_media(str(video.id))
    (run,) = wait_for_runs([run_id]).values()
    assert run.state.name == "Failed" and "generate-video-preview" in run.state.message
    with session_scope() as session:
        jobs = {j.job: j for j in load_media(session, video.id).jobs}
        assert jobs["generate-video-preview"].state is JobState.FAILED
        assert jobs["generate-video-thumbnail"].state is JobState.SUCCEEDED

    production["stop_workers"]()
    production["start_worker"]()  # the cause is fixed
    retried = retry_failed([run_id])
    assert [r.id for r in retried] == [run_id]
    (run,) = wait_for_runs([run_id]).values()

    assert run.state.name == "Completed" and run.run_count == 2

    # The retry made new task runs next to the first attempt's (4 in all, once recorded).
    def recorded() -> bool:
        runs = task_runs([run_id])
        return len(runs) == 4 and all(t.state.is_final() for t in runs)

    wait_until(recorded, 30, "the retry's task runs")
    latest = {t.name.split(" · ")[0]: t.state.name
              for t in sorted(task_runs([run_id]), key=lambda t: t.created)}  # fmt: skip
    assert latest == {"generate-video-thumbnail": "Cached", "generate-video-preview": "Completed"}
    with session_scope() as session:
        stored = load_media(session, video.id)
        assert stored.status is MediaStatus.READY
        assert sorted(d.type.value for d in stored.derivatives) == ["PREVIEW", "THUMBNAIL"]
    folder = get_settings().media_root / f"alerts/{video.alert_id}/media/{video.id}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["original.mp4", f"{video.id}-preview.mp4", f"{video.id}-thumbnail.jpg"]
    )


def test_priority_holds_per_job_under_a_backlog(production, tmp_path: Path):
    # Voice notes arrive first (their waveforms are low priority), then photos.
    audio = [register_media(make_tone(tmp_path / f"a{i}.wav", 2.0), category="AUTRE")
             for i in range(3)]  # fmt: skip
    photos = [register_media(make_jpeg(tmp_path / f"p{i}.jpg", 800, 600), category="AUTRE")
              for i in range(3)]  # fmt: skip
    run_ids = [run for m in audio + photos for run in submit_media(str(m.id))]

    production["start_worker"](limit=1)
    wait_for_runs(run_ids)

    runs = task_runs(run_ids)
    high = [t for t in runs if "priority-high" in t.tags]
    low = [t for t in runs if "priority-low" in t.tags]
    assert len(high) == 6 and len(low) == 3
    assert max(t.end_time for t in high) <= min(t.start_time for t in low)
