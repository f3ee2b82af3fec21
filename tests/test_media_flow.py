"""The per-media flow end to end: real Prefect server, real databases, real files."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ParameterTypeError
from sqlalchemy import text

from db.models import JobState, MediaDerivative, MediaStatus, MediaType, ProcessingJob
from db.repository import create_media, ensure_alert, load_media
from db.session import session_scope, transaction
from deployments.operations.registration import register_media
from flows.media import make_media_flow, process_media, process_media_batch
from media_pipeline.errors import InvalidId, InvalidMedia, TransientError
from media_pipeline.settings import get_settings
from media_pipeline.storage import media_key, relative_key
from tasks.context import JobInput, JobResult
from tasks.table import HIGH, JOB_TABLE, Job
from tests.support.media import is_marker, make_jpeg

pytestmark = pytest.mark.usefixtures("prefect_server")


def derivative_rows(media_id: uuid.UUID) -> list[MediaDerivative]:
    with session_scope() as session:
        return list(load_media(session, media_id).derivatives)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_photo_with_orientation_6_gets_three_upright_derivatives(app_db: str, tmp_path: Path):
    photo = make_jpeg(tmp_path / "phone.jpg", 3000, 4000, orientation=6)
    assert Image.open(photo).size == (4000, 3000)  # stored landscape, displayed portrait
    media = register_media(photo, category="AUTRE")

    state = process_media(str(media.id), return_state=True)

    assert state.is_completed(), state.message
    rows = {row.type.value: row for row in derivative_rows(media.id)}
    assert {k: (r.width, r.height) for k, r in rows.items()} == {
        "THUMBNAIL": (150, 150),
        "MEDIUM": (450, 600),
        "LARGE": (810, 1080),
    }
    root = get_settings().media_root
    for row in rows.values():
        with Image.open(root / row.storage_key) as image:
            assert image.format == "JPEG"
            assert image.size == (row.width, row.height)
            assert row.bytes == (root / row.storage_key).stat().st_size
            assert "exif" not in image.info
    with Image.open(root / rows["LARGE"].storage_key) as large:
        assert is_marker(large.convert("RGB").getpixel((5, 5)))  # red block top-left: upright
        assert not is_marker(large.convert("RGB").getpixel((800, 1070)))
    with session_scope() as session:
        stored = load_media(session, media.id)
        assert stored.status is MediaStatus.READY
        assert stored.placeholder and len(stored.placeholder) > 10
        (job,) = stored.jobs
        assert (job.job, job.state, job.attempts) == ("generate-thumbnails", JobState.SUCCEEDED, 1)


def test_running_twice_keeps_three_rows_and_three_files(app_db: str, tmp_path: Path):
    media = register_media(make_jpeg(tmp_path / "a.jpg", 1200, 900), category="AUTRE")
    folder = get_settings().media_root / media_key(media.alert_id, media.id)

    first = process_media(str(media.id), return_state=True)
    ids_before = sorted(str(r.id) for r in derivative_rows(media.id))
    second = process_media(str(media.id), return_state=True)

    assert first.is_completed() and second.is_completed()
    assert len(derivative_rows(media.id)) == 3
    assert sorted(str(r.id) for r in derivative_rows(media.id)) == ids_before
    assert files_in(folder) == sorted(
        ["original.jpg"] + [f"{media.id}-{k}.jpg" for k in ("thumbnail", "medium", "large")]
    )


FLAKY_CALLS: Counter[str] = Counter()


def fails_twice_then_succeeds(job: JobInput) -> JobResult:
    key = str(job.media_id)
    FLAKY_CALLS[key] += 1
    if FLAKY_CALLS[key] < 3:
        raise TransientError(f"provider busy (call {FLAKY_CALLS[key]})")
    return JobResult()


def task_runs_of(flow_run_id: uuid.UUID, timeout: float = 30):
    """Task runs of a flow run with their states, once the server has recorded them all
    (task run states reach the server through its event pipeline, a moment later)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if (runs and all(r.state and r.state.is_final() for r in runs)) or (
                time.monotonic() > deadline
            ):
                return {run.name: (run, client.read_task_run_states(run.id)) for run in runs}
            time.sleep(0.3)


def test_transient_failures_are_retried_after_2_then_4_seconds(sqlite_db: str, tmp_path: Path):
    flaky = Job(
        "flaky-job",
        MediaType.IMAGE,
        HIGH,
        "tests.test_media_flow:fails_twice_then_succeeds",
        "test job",
    )
    flow = make_media_flow(JOB_TABLE.with_job(flaky), name="process-media-test")
    media = register_media(make_jpeg(tmp_path / "a.jpg", 640, 480), category="AUTRE")

    state = flow(str(media.id), jobs=["flaky-job"], return_state=True)

    assert state.is_completed(), state.message
    ((run, states),) = task_runs_of(state.state_details.flow_run_id).values()
    assert run.state.is_completed() and run.run_count == 3
    names = [s.name for s in states]
    assert names.count("AwaitingRetry") == 2 and names[-1] == "Completed"
    waits = []
    for index, waiting in enumerate(states):
        if waiting.name == "AwaitingRetry":
            resumed = next(s for s in states[index + 1 :] if s.name in ("Running", "Retrying"))
            waits.append((resumed.timestamp - waiting.timestamp).total_seconds())
    assert 1.9 <= waits[0] <= 3.5 and 3.9 <= waits[1] <= 5.5, waits
    with session_scope() as session:
        (job,) = load_media(session, media.id).jobs
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 3)


UNREACHABLE = "postgresql+psycopg://root@127.0.0.1:9/none"  # nothing listens on port 9


def meets_the_database_away_twice(job: JobInput) -> JobResult:
    """A job whose database calls find it unreachable twice (a real refused connection)."""
    key = str(job.media_id)
    FLAKY_CALLS[key] += 1
    if FLAKY_CALLS[key] < 3:
        transaction(lambda session: session.execute(text("select 1")), url=UNREACHABLE)
    return JobResult()


def test_the_database_away_is_not_an_attempt(sqlite_db: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MEDIA_PIPELINE_DB_RETRY_SECONDS", "0")
    get_settings.cache_clear()
    job = Job(
        "database-job",
        MediaType.IMAGE,
        HIGH,
        "tests.test_media_flow:meets_the_database_away_twice",
        "test job",
    )
    flow = make_media_flow(JOB_TABLE.with_job(job), name="process-media-test")
    media = register_media(make_jpeg(tmp_path / "a.jpg", 640, 480), category="AUTRE")

    state = flow(str(media.id), jobs=["database-job"], return_state=True)

    assert state.is_completed(), state.message
    ((run, _),) = task_runs_of(state.state_details.flow_run_id).values()
    assert run.run_count == 1  # waited out within the attempt: no retry of Prefect's
    with session_scope() as session:
        (row,) = load_media(session, media.id).jobs
        assert (row.state, row.attempts, row.error) == (JobState.SUCCEEDED, 1, None)


def test_a_fault_that_outlasts_the_wait_is_not_retried(sqlite_db: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MEDIA_PIPELINE_DB_RETRY_SECONDS", "0")
    monkeypatch.setenv("MEDIA_PIPELINE_FAULT_WAIT_SECONDS", "1.5")
    get_settings.cache_clear()
    job = Job(
        "database-job",
        MediaType.IMAGE,
        HIGH,
        "tests.test_media_flow:meets_the_database_away_twice",
        "test job",
    )
    flow = make_media_flow(JOB_TABLE.with_job(job), name="process-media-test")
    media = register_media(make_jpeg(tmp_path / "a.jpg", 640, 480), category="AUTRE")
    FLAKY_CALLS[str(media.id)] = -10  # away for longer than the wait

    state = flow(str(media.id), jobs=["database-job"], return_state=True)

    assert state.is_failed()
    ((run, _),) = task_runs_of(state.state_details.flow_run_id).values()
    assert run.run_count == 1  # a retry would have been an attempt
    with session_scope() as session:  # in-process, no reconciler to run it again: FAILED
        (row,) = load_media(session, media.id).jobs
        assert (row.state, row.attempts) == (JobState.FAILED, 1)
        assert "waited 2 s for the app database or the Prefect API" in row.error


def add_media_row(path: Path, media_type: MediaType = MediaType.IMAGE) -> uuid.UUID:
    """What the app does on upload: the row with its declared type, the file in place."""
    alert_id, media_id = uuid.uuid4(), uuid.uuid4()
    root = get_settings().media_root
    target = root / media_key(alert_id, media_id) / "original.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    with session_scope() as session:
        ensure_alert(session, alert_id, "AUTRE")
        create_media(
            session,
            media_id=media_id,
            alert_id=alert_id,
            media_type=media_type,
            filename=path.name,
            mime_type="image/jpeg",
            size=target.stat().st_size,
            storage_key=relative_key(root, target),
        )
    return media_id


@pytest.mark.parametrize("damage", ["truncated", "random-bytes"])
def test_corrupt_image_fails_at_once_without_partial_files(app_db: str, tmp_path: Path, damage):
    photo = make_jpeg(tmp_path / "whole.jpg", 2000, 1500)
    bad = tmp_path / "bad.jpg"
    if damage == "truncated":
        bad.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    else:
        bad.write_bytes(uuid.uuid4().bytes * 4000)
        with pytest.raises(InvalidMedia, match="not a recognised image"):
            register_media(bad, category="AUTRE")
    media_id = add_media_row(bad)
    folder = next(get_settings().media_root.glob(f"alerts/*/media/{media_id}"))

    state = process_media(str(media_id), return_state=True)

    assert state.is_failed()
    ((run, _),) = task_runs_of(state.state_details.flow_run_id).values()
    assert run.run_count == 1 and run.state.is_failed()
    with session_scope() as session:
        media = load_media(session, media_id)
        (job,) = media.jobs
        assert (media.status, job.state, job.attempts) == (MediaStatus.FAILED, JobState.FAILED, 1)
        expected = "corrupt JPEG" if damage == "truncated" else "cannot identify image file"
        assert expected in media.status_message and "generate-thumbnails" in media.status_message
    assert files_in(folder) == ["original.jpg"]


def test_a_batch_goes_past_a_corrupt_media_and_passes_over_a_missing_one(
    app_db: str, tmp_path: Path
):
    """A backfill's run: one job on several media in turn, each recorded on its own."""
    photo = make_jpeg(tmp_path / "whole.jpg", 2000, 1500)
    (tmp_path / "bad.jpg").write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    bad = add_media_row(tmp_path / "bad.jpg")
    good = register_media(photo, category="AUTRE").id
    missing = uuid.uuid4()

    state = process_media_batch([bad, missing, good], ["generate-thumbnails"], return_state=True)

    assert state.is_failed() and state.message.startswith("1 of 3 media failed: media ")
    assert "corrupt JPEG" in state.message
    assert state.result(raise_on_failure=False) == {
        str(bad): "FAILED",
        str(missing): "GONE",
        str(good): "READY",
    }
    assert sorted(r.type.value for r in derivative_rows(good)) == ["LARGE", "MEDIUM", "THUMBNAIL"]
    runs = task_runs_of(state.state_details.flow_run_id)
    assert len(runs) == 2  # one task run per media present
    with session_scope() as session:
        assert load_media(session, bad).jobs[0].state is JobState.FAILED


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "not-a-uuid", "", "1234", "%2e%2e%2f"])
def test_ids_that_are_not_uuids_are_refused(sqlite_db: str, tmp_path: Path, bad_id: str):
    with pytest.raises(InvalidId):
        media_key(bad_id, uuid.uuid4())
    with pytest.raises(InvalidId):
        register_media(make_jpeg(tmp_path / "a.jpg", 64, 64), alert_id=bad_id)
    state = process_media(bad_id, return_state=True)  # refused by the flow's parameter type
    assert state.is_failed() and "Validation of flow parameters failed" in state.message
    with pytest.raises(ParameterTypeError, match="media_id"):
        state.result()
    with session_scope() as session:
        assert session.query(ProcessingJob).count() == 0
    assert not list(get_settings().media_root.glob("**/*.jpg"))
