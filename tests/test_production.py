"""The production profile end to end: Prefect server on PostgreSQL with Redis messaging,
``media-pipeline setup``, warm and stock process workers pulling runs, the client API."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from db.models import JobState, MediaStatus
from db.repository import load_media
from db.session import session_scope
from deployments.cli.app import app
from deployments.operations.client_api import (
    failed_runs,
    get_job_status,
    get_media,
    get_queue_stats,
    submit_media,
)
from deployments.operations.registration import register_media
from deployments.worker.starter import local_working_directory
from deployments.worker.warm import WORKER_TYPE as WARM
from media_pipeline.settings import get_settings
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import wait_until
from tests.support.production import task_runs, wait_for_runs
from tests.support.worker_flows import PROJECT_DIR, deploy_test_flow, segfault, sleepy

pytestmark = pytest.mark.usefixtures("prefect_server")
cli = CliRunner()


def test_a_dozen_media_processed_by_two_warm_workers(production, tmp_path: Path):
    production["use"](WARM)
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
        kinds = {
            load_media(session, m.id).type.value: len(load_media(session, m.id).derivatives)
            for m in media[1:]
        }
    assert kinds == {"IMAGE": 3, "AUDIO": 1, "VIDEO": 2}

    summary = get_media(str(media[1].id))  # what the app reads: typed
    assert summary.status is MediaStatus.READY and summary.jobs[0].outputs[0].type == "THUMBNAIL"
    status = get_job_status(run_ids[0])
    assert status["state"] == "Completed" and status["progress"] == 100
    assert status["jobs"] == [
        {
            "job": "generate-thumbnails",
            "media_id": str(media[0].id),  # run_ids[0]: the first media's thumbnails
            "state": "SUCCEEDED",
            "attempts": 1,
            "error": None,
        }
    ]
    after = get_queue_stats()
    gained = {q: {k: after[q][k] - before[q][k] for k in after[q]} for q in after}
    # One more run than submitted: the enhanced portrait's thumbnails, submitted by the
    # enhancement's run to the high queue.
    assert gained["all"]["completed"] == len(run_ids) + 1 and gained["all"]["failed"] == 0
    assert (
        gained["high"]["completed"],
        gained["normal"]["completed"],
        gained["low"]["completed"],
    ) == (9, 5, 4)
    assert gained["all"]["waiting"] == gained["all"]["active"] == 0

    receiver = production["receiver"]
    wait_until(lambda: len(receiver.bodies) >= len(media) + 1, 30, "callbacks")
    headers, body = receiver.bodies[0]
    message = Webhook(b"callback-secret").verify(body, headers)  # signed, and recent
    assert message["type"] == "media.processed" and message["data"]["status"] == "READY"
    announced = {json.loads(b)["data"]["media_id"] for _, b in receiver.bodies}
    assert {str(m.id) for m in media} <= announced


@pytest.mark.parametrize("worker_type", ["process", WARM])
def test_failed_run_is_retried_without_redoing_finished_jobs(
    production, worker_type: str, tmp_path: Path
):
    production["use"](worker_type)
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

    # Analysts find it by job and media type, see what will be re-run, and re-run it.
    found = failed_runs(job="generate-video-preview", media_type="video", since=timedelta(hours=1))
    assert [(r.id, r.media_id, r.media_type, r.jobs) for r in found] == [
        (run_id, str(video.id), "VIDEO", ("generate-video-preview",))
    ]
    assert run_id not in {r.id for r in failed_runs(job="generate-video-thumbnail")}
    assert run_id not in {r.id for r in failed_runs(media_type="image")}
    listed = cli.invoke(app, ["failed", "--job", "generate-video-preview", "--type", "VIDEO"])
    assert listed.exit_code == 0 and run_id in listed.output
    assert "video preview: ffmpeg took longer than 0 s" in listed.output
    refused = cli.invoke(app, ["failed", "--job", "make-coffee"])
    assert refused.exit_code == 2 and "unknown job 'make-coffee'" in refused.output
    # A time-out says "not retried": the run is left alone unless asked for by name.
    skipped = cli.invoke(
        app,
        [
            "retry-failed",
            "--job",
            "generate-video-preview",
            "--type",
            "video",
            "--since",
            "1h",
            "--dry-run",
        ],
    )
    assert "0 run(s) would be scheduled again" in skipped.output
    as_json = cli.invoke(app, ["failed", "--job", "generate-video-preview", "--json"])
    assert [(r["id"], r["permanent"]) for r in json.loads(as_json.output)] == [(run_id, True)]
    shown = cli.invoke(
        app,
        [
            "retry-failed",
            "--job",
            "generate-video-preview",
            "--type",
            "video",
            "--since",
            "1h",
            "--dry-run",
            "--include-permanent",
        ],
    )
    assert run_id in shown.output and "1 run(s) would be scheduled again" in shown.output
    assert wait_for_runs([run_id])[run_id].state.name == "Failed"  # a dry run changes nothing

    production["stop_workers"]()
    production["start_worker"]()  # the cause is fixed
    retried = cli.invoke(
        app,
        [
            "retry-failed",
            "--job",
            "generate-video-preview",
            "--type",
            "video",
            "--since",
            "1h",
            "--include-permanent",
        ],
    )
    assert retried.exit_code == 0 and "1 run(s) scheduled again" in retried.output
    (run,) = wait_for_runs([run_id]).values()

    assert run.state.name == "Completed" and run.run_count == 2

    # The retry made new task runs next to the first attempt's (4 in all, once recorded).
    def job_runs() -> list[Any]:  # the jobs' task runs, not the webhook's
        return [t for t in task_runs([run_id]) if not t.name.startswith("media-webhook")]

    def recorded() -> bool:
        runs = job_runs()
        return len(runs) == 4 and all(t.state.is_final() for t in runs)

    wait_until(recorded, 30, "the retry's task runs")
    latest = {
        t.name.split(" · ")[0]: t.state.name for t in sorted(job_runs(), key=lambda t: t.created)
    }
    assert latest == {"generate-video-thumbnail": "Cached", "generate-video-preview": "Completed"}
    with session_scope() as session:
        stored = load_media(session, video.id)
        assert stored.status is MediaStatus.READY
        assert sorted(d.type.value for d in stored.derivatives) == ["PREVIEW", "THUMBNAIL"]
    folder = get_settings().media_root / f"alerts/{video.alert_id}/media/{video.id}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["original.mp4", f"{video.id}-preview.mp4", f"{video.id}-thumbnail.jpg"]
    )


def flow_run_logs(run_id: str) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)])), limit=200
        )
    return [log.message for log in logs]


def test_warm_worker_survives_a_segfault_and_cancels_a_run(production, tmp_path: Path):
    pool = production["use"](WARM)
    with get_client(sync_client=True) as client:
        crash = deploy_test_flow(client, segfault, pool, "high")
        sleeper = deploy_test_flow(client, sleepy, pool, "low")
        # prefect deploy resolved the pull step: children load the flow from its entrypoint.
        deployment = client.read_deployment_by_name("process-media/media-high")
    assert local_working_directory(deployment.pull_steps) == PROJECT_DIR
    # Polls are 30 s apart: runs start at once only because Scheduled events wake the worker.
    worker = production["start_worker"](query_seconds=30)
    wait_until(lambda: "started!" in (tmp_path / "worker-0.log").read_text(), 60, "the worker")
    time.sleep(1)  # it has polled once and listens for Scheduled events

    with get_client(sync_client=True) as client:
        sleeping = str(client.create_flow_run_from_deployment(uuid.UUID(sleeper)).id)
        crashing = str(client.create_flow_run_from_deployment(uuid.UUID(crash)).id)
    photo = register_media(make_jpeg(tmp_path / "p.jpg", 1200, 900), category="AUTRE")
    (photo_run,) = submit_media(str(photo.id))
    runs = wait_for_runs([crashing, photo_run], timeout=60)

    assert runs[crashing].state.name == "Crashed"
    assert "status code: -11" in runs[crashing].state.message
    wait_until(
        lambda: any("killed by SIGSEGV" in m for m in flow_run_logs(crashing)),
        30,
        "the signal in the run's logs",
    )
    assert runs[photo_run].state.name == "Completed"
    assert (runs[photo_run].start_time - runs[photo_run].created).total_seconds() < 10
    wait_until(
        lambda: any(
            f"media {photo.id}: generate-thumbnails done" in m for m in flow_run_logs(photo_run)
        ),
        30,
        "the job's log lines in the server",
    )

    def sleeper_state() -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(uuid.UUID(sleeping))

    wait_until(lambda: sleeper_state().state.name == "Running", 30, "the sleeping run to start")
    child_pid = int(sleeper_state().infrastructure_pid)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(sleeping), Cancelling())
    (cancelled,) = wait_for_runs([sleeping], timeout=60).values()
    assert cancelled.state.name == "Cancelled"
    wait_until(lambda: not Path(f"/proc/{child_pid}").exists(), 30, "the run's process to end")

    assert worker.poll() is None  # nothing else went down: the next photo is processed
    again = register_media(make_jpeg(tmp_path / "q.jpg", 800, 600), category="AUTRE")
    (again_run,) = submit_media(str(again.id))
    assert wait_for_runs([again_run], timeout=60)[again_run].state.name == "Completed"


def test_warm_worker_restarts_on_code_change_without_losing_runs(production, tmp_path: Path):
    pool = production["use"](WARM)
    code = tmp_path / "code"
    code.mkdir()
    module = code / "warm_probe_module.py"
    module.write_text("VALUE = 1\n")
    with get_client(sync_client=True) as client:
        sleeper = deploy_test_flow(client, sleepy, pool, "low")
    production["start_worker"](
        PYTHONPATH=str(code),
        MEDIA_PIPELINE_WARM_PRELOAD='["flows.media", "warm_probe_module"]',
    )
    with get_client(sync_client=True) as client:
        sleeping = str(
            client.create_flow_run_from_deployment(uuid.UUID(sleeper), parameters={"seconds": 8}).id
        )

        def running() -> bool:
            return client.read_flow_run(uuid.UUID(sleeping)).state.name == "Running"

        wait_until(running, 60, "the sleeping run to start")

    module.write_text("VALUE = 2\n")  # a deployment of new code, while a run is in flight
    photo = register_media(make_jpeg(tmp_path / "p.jpg", 800, 600), category="AUTRE")
    (photo_run,) = submit_media(str(photo.id))
    runs = wait_for_runs([photo_run, sleeping], timeout=60)

    assert {r.state.name for r in runs.values()} == {"Completed"}  # the old child finished
    # The photo did not wait for the run started by the old interpreter to end.
    assert runs[photo_run].start_time < runs[sleeping].end_time
    wait_until(
        lambda: "Code changed: the warm interpreter was restarted" in flow_run_logs(photo_run),
        30,
        "the restart in the photo run's logs",
    )
