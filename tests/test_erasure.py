"""Erasure on the production path (PostgreSQL, Redis, a Prefect server, a warm worker,
uploads through the API): a voice note whose transcript says a marker phrase, a DISP photo
(enhanced) and a video, processed, then erased; afterwards no store holds the phrase, the
file names or the originals' bytes: the app database, Prefect's database (artifacts, logs,
runs), the results folder, the media root and the workers' temporary folders."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from psycopg import sql

from db.erasure import tombstones_of
from db.models import Media, MediaDerivative, MediaStatus, ProcessingJob, Transcription
from db.session import session_scope
from deployments.worker.warm import WORKER_TYPE as WARM
from media_pipeline.object_store import S3Store, get_store
from media_pipeline.settings import get_settings
from tests.support.api import complete, start_api, upload
from tests.support.databases import PG_ADMIN_DB, PG_HOST, PG_PORT
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import stop_process, wait_until

TOKEN = "erasure-token-0123456789"
FINAL = {MediaStatus.READY, MediaStatus.PARTIAL, MediaStatus.FAILED}


@pytest.fixture(params=["local", "s3"])
def site(
    request: pytest.FixtureRequest,
    production,
    prefect_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """Set-up, a warm worker, the API and a client of it, on local storage or S3; a marker
    phrase in transcripts."""
    monkeypatch.setenv("MEDIA_PIPELINE_RECONCILE_SECONDS", "1")
    if request.param == "s3":
        request.getfixturevalue("s3_storage")
    get_settings.cache_clear()
    production["use"](WARM)
    marker = f"marker-{uuid.uuid4().hex[:6]} lighthouse"
    production["providers"].phrase = f", {marker}"
    production["start_worker"]()
    process, base = start_api(
        tmp_path / "api.log", MEDIA_PIPELINE_API_TOKENS=TOKEN, PREFECT_API_URL=prefect_server
    )
    try:
        with httpx.Client(
            base_url=base, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            yield {**production, "client": client, "marker": marker, "storage": request.param}
    finally:
        stop_process(process)


def three_media(folder: Path, alert: uuid.UUID, client: httpx.Client) -> dict[str, Any]:
    """A voice note, a DISP photo and a video of one alert, uploaded and completed; their
    ids, files and names (names no other test uses)."""
    tag = uuid.uuid4().hex[:8]
    files = {
        "AUDIO": make_tone(folder / f"voice-{tag}.m4a", 3.0, codec_args=("-c:a", "aac")),
        "IMAGE": make_jpeg(folder / f"portrait-{tag}.jpg", 1200, 1600, seed=7),
        "VIDEO": make_video(folder / f"clip-{tag}.mp4", 12),
    }
    ids = {}
    for kind, path in files.items():
        media_id, done = upload(client, path, kind, alert=alert, category="DISP")
        complete(client, done)
        ids[kind] = media_id
    return {"ids": ids, "files": files}


def statuses(ids: list[uuid.UUID]) -> dict[uuid.UUID, MediaStatus | None]:
    with session_scope() as session:
        return {m: (row.status if (row := session.get(Media, m)) else None) for m in ids}


def enhanced_copy(source: uuid.UUID) -> uuid.UUID | None:
    with session_scope() as session:
        return session.query(Media.id).filter(Media.source_media_id == source).scalar()


def dump_databases(prefixes: tuple[str, ...]) -> dict[str, bytes]:
    """Every row of every table of the databases whose names start with ``prefixes`` (the
    app's and the Prefect server's are among them), as text per table."""
    tables: dict[str, bytes] = {}
    with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_ADMIN_DB) as admin:
        names = [
            n for (n,) in admin.execute("SELECT datname FROM pg_database") if n.startswith(prefixes)
        ]
    for name in names:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=name) as conn:
            listed = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (table,) in listed.fetchall():
                query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
                rows = "\n".join(row for (row,) in conn.execute(query))
                tables[f"{name}.{table}"] = rows.encode()
    return tables


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def leftovers(site: dict[str, Any], made: dict[str, Any]) -> list[str]:
    """Where the marker, a file name or an original's bytes still are."""
    needles = {"the marker phrase": site["marker"].encode()}
    for kind, path in made["files"].items():
        data = path.read_bytes()
        needles[f"the {kind} file name"] = path.stem.encode()
        needles[f"the {kind} original's bytes"] = data[len(data) // 2 : len(data) // 2 + 64]
    found = []
    for table, rows in dump_databases(("mp_app", "mp_prefect")).items():
        found += [f"{what} in {table}" for what, needle in needles.items() if needle in rows]
    settings = get_settings()
    workspaces = Path(tempfile.gettempdir()).glob("media-pipeline-job-*")
    results = Path(str(PREFECT_LOCAL_STORAGE_PATH.value()))  # the workers' own, on S3
    stored = {
        str(p): p.read_bytes() for p in files_under(settings.media_root, results, *workspaces)
    }
    if isinstance(store := get_store(), S3Store):
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
            for item in page.get("Contents", []):
                body = store.client.get_object(Bucket=store.bucket, Key=item["Key"])["Body"]
                stored[f"s3://{store.bucket}/{item['Key']}"] = body.read()
    for where, data in stored.items():
        found += [
            f"{what} in {where}"
            for what, needle in needles.items()
            if needle in data or needle in where.encode()
        ]
    return found


def assert_no_copies(site: dict[str, Any], made: dict[str, Any]) -> None:
    """None left; the server deletes a run's logs in the background, a moment after it."""
    deadline = time.monotonic() + 60
    while (found := leftovers(site, made)) and time.monotonic() < deadline:
        time.sleep(2)
    assert found == []


def media_left(alert: uuid.UUID, ids: list[uuid.UUID]) -> list[str]:
    """Rows of the media in the app database, and objects of the alert in the store."""
    with session_scope() as session:
        rows = [
            f"{model.__tablename__} of {m}"
            for model in (Media, MediaDerivative, Transcription, ProcessingJob)
            for m in ids
            if session.query(model)
            .filter((model.id if model is Media else model.media_id) == m)
            .count()
        ]
    store = get_store()
    prefix = f"alerts/{alert}/"
    if isinstance(store, S3Store):
        listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + prefix)
        objects = [item["Key"] for item in listed.get("Contents", [])]
    else:
        objects = [str(p) for p in files_under(get_settings().media_root / prefix)]
    return rows + objects


def test_an_erased_alert_leaves_no_copy_in_any_store(site, tmp_path: Path):
    client: httpx.Client = site["client"]
    alert = uuid.uuid4()
    made = three_media(tmp_path, alert, client)
    ids = list(made["ids"].values())
    wait_until(
        lambda: (
            set(statuses(ids).values()) <= FINAL and enhanced_copy(made["ids"]["IMAGE"]) is not None
        ),
        180,
        "the three media and the copy",
    )
    copy = enhanced_copy(made["ids"]["IMAGE"])

    def thumbnails_of_copy() -> int:
        with session_scope() as session:
            return session.query(MediaDerivative).filter_by(media_id=copy).count()

    wait_until(lambda: thumbnails_of_copy() == 3, 120, "the enhanced copy's thumbnails")
    before = leftovers(site, made)  # processed: the stores hold them now
    assert any("marker" in f for f in before) and any("bytes" in f for f in before), before

    answer = client.delete(f"/api/alerts/{alert}")

    assert answer.status_code == 200, answer.text
    receipts = {r["mediaId"]: r for r in answer.json()["media"]}
    assert set(receipts) == {str(m) for m in [*ids, copy]}
    assert answer.json()["alertRemoved"] is True
    photo = receipts[str(made["ids"]["IMAGE"])]
    assert photo["removed"]["database"]["derivatives"] == 3
    assert photo["removed"]["store"]["objects"] == 1 + 3  # original, derivatives
    enhanced = receipts[str(copy)]
    assert enhanced["enhancedCopy"] is True and enhanced["removed"]["store"]["objects"] == 1 + 3
    note = receipts[str(made["ids"]["AUDIO"])]
    assert note["removed"]["database"]["transcriptions"] == 1
    assert note["removed"]["database"]["jobs"] == 2
    for media_id in [*ids, copy]:
        gone = client.get(f"/api/media/{media_id}")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "media_erased"
    assert_no_copies(site, made)
    # A run still publishing when the media became final was cancelled: the reconciler
    # finishes that. Then erasing again answers the same final receipts.
    wait_until(
        lambda: all(
            not r["pending"] for r in client.delete(f"/api/alerts/{alert}").json()["media"]
        ),
        120,
        "the reconciler to finish",
    )
    final = client.delete(f"/api/alerts/{alert}").json()
    assert final == client.delete(f"/api/alerts/{alert}").json()
    assert {r["mediaId"] for r in final["media"]} == set(receipts)
    with session_scope() as session:
        assert len(tombstones_of(session, made["ids"]["IMAGE"])) == 2


@pytest.mark.parametrize("site", ["local"], indirect=True)
def test_an_erasure_racing_with_runs_in_flight_leaves_nothing(site, tmp_path: Path):
    """Erased while the transcription waits on its provider and the video preview encodes:
    the runs are cancelled, and what they finish afterwards is thrown away."""
    client: httpx.Client = site["client"]
    site["providers"].latency = 6.0
    alert = uuid.uuid4()
    tag = uuid.uuid4().hex[:8]
    files = {
        "AUDIO": make_tone(tmp_path / f"voice-{tag}.m4a", 3.0, codec_args=("-c:a", "aac")),
        "VIDEO": make_video(tmp_path / f"clip-{tag}.mp4", 12, size="1280x720"),
    }
    ids = {}
    for kind, path in files.items():
        media_id, done = upload(client, path, kind, alert=alert, category="AUTRE")
        complete(client, done)
        ids[kind] = media_id

    def running(job: str) -> bool:
        with session_scope() as session:
            return session.query(ProcessingJob).filter_by(job=job, state="RUNNING").count() > 0

    wait_until(
        lambda: running("transcribe-audio") and running("generate-video-preview"),
        90,
        "the transcription and the preview in flight",
        interval=0.05,
    )
    answer = client.delete(f"/api/alerts/{alert}")

    assert answer.status_code == 200, answer.text
    receipts = answer.json()["media"]
    assert any("in flight" in str(r["pending"].get("prefect", "")) for r in receipts), receipts
    wait_until(
        lambda: all(
            not r["pending"] for r in client.delete(f"/api/alerts/{alert}").json()["media"]
        ),
        120,
        "the reconciler to finish",
    )
    time.sleep(site["providers"].latency)  # a late answer, had anything still waited for it
    made = {"files": files}
    assert media_left(alert, list(ids.values())) == []
    assert_no_copies(site, made)


@pytest.mark.parametrize("site", ["s3"], indirect=True)
def test_an_erasure_while_s3_is_down_is_finished_when_it_is_back(site, seaweed, tmp_path: Path):
    client: httpx.Client = site["client"]
    alert = uuid.uuid4()
    photo = make_jpeg(tmp_path / f"photo-{uuid.uuid4().hex[:8]}.jpg", 1600, 1200)
    media_id, done = upload(client, photo, "IMAGE", alert=alert)
    complete(client, done)
    wait_until(lambda: statuses([media_id])[media_id] in FINAL, 120, "the photo")

    closing = client.put(f"/api/alerts/{alert}", json={"closedAt": "2026-12-01T09:00:00Z"})
    assert closing.status_code == 200 and closing.json()["closedAt"].startswith("2026-12-01")
    naive = client.put(f"/api/alerts/{alert}", json={"closedAt": "2026-12-01T09:00:00"})
    assert naive.status_code == 422 and "time zone" in naive.json()["error"]["message"]

    seaweed.stop()
    try:
        answer = client.delete(f"/api/media/{media_id}")
        assert answer.status_code == 200, answer.text
        (receipt,) = answer.json()["media"]
        assert "store" in receipt["pending"] and receipt["removed"]["database"]["media"] == 1
        assert client.get(f"/api/media/{media_id}").status_code == 410  # erased already
    finally:
        seaweed.start()
    wait_until(
        lambda: client.delete(f"/api/media/{media_id}").json()["media"][0]["pending"] == {},
        120,
        "the reconciler to clear the bucket",
    )
    (final,) = client.delete(f"/api/media/{media_id}").json()["media"]
    assert final["removed"]["store"]["objects"] == 4 and final["finishedAt"]
    assert media_left(alert, [media_id]) == []
    assert_no_copies(site, {"files": {"IMAGE": photo}})


@pytest.mark.usefixtures("prefect_server", "sqlite_db")
def test_erase_on_the_command_line_asks_then_removes_a_processed_voice_note(
    fake_providers, tmp_path: Path
):
    """The embedded default: a voice note processed in-process (its runs carry no media
    tag), then erased by the CLI, which asks first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from typer.testing import CliRunner

    from deployments.cli.app import app

    cli = CliRunner()
    fake_providers.phrase = ", marker-cli lighthouse"
    note = make_tone(
        tmp_path / f"voice-{uuid.uuid4().hex[:8]}.m4a", 2.0, codec_args=("-c:a", "aac")
    )
    processed = cli.invoke(app, ["process", str(note), "--json"])
    assert processed.exit_code == 0, processed.output
    summary = json.loads(processed.stdout)
    media_id, runs = summary["media_id"], {j["flow_run_id"] for j in summary["jobs"]}

    refused = cli.invoke(app, ["erase", media_id], input="n\n")
    assert refused.exit_code == 2 and "nothing erased" in refused.output
    assert note.name in refused.output  # it showed what it would erase
    erased = cli.invoke(app, ["erase", media_id, "--yes", "--json"])

    assert erased.exit_code == 0, erased.output
    (receipt,) = json.loads(erased.stdout)
    assert receipt["pending"] == {} and receipt["removed"]["prefect"]["runs"] == len(runs)
    assert receipt["removed"]["database"]["transcriptions"] == 1
    with get_client(sync_client=True) as client:
        ids = [uuid.UUID(r) for r in runs]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        assert artifacts == []
        for run in ids:
            with pytest.raises(ObjectNotFound):
                client.read_flow_run(run)
    assert media_left(uuid.UUID(summary["alert_id"]), [uuid.UUID(media_id)]) == []
    status = cli.invoke(app, ["erase", media_id, "--yes", "--json"])  # the same receipt
    assert json.loads(status.stdout) == [receipt]


@pytest.mark.usefixtures("prefect_server", "sqlite_db")
def test_the_retention_erases_the_media_of_alerts_closed_long_enough(monkeypatch, tmp_path):
    from datetime import UTC, datetime, timedelta

    from db.erasure import set_alert_closed
    from db.session import transaction
    from deployments.operations.registration import register_media
    from deployments.operations.retention import prune_flow_runs

    monkeypatch.setenv("MEDIA_PIPELINE_ERASE_CLOSED_AFTER_DAYS", "30")
    get_settings.cache_clear()
    closed_long_ago, closed_lately, open_case = (
        register_media(make_jpeg(tmp_path / f"{n}.jpg", 320, 240), category="AUTRE")
        for n in ("a", "b", "c")
    )
    now = datetime.now(UTC)
    for media, days in ((closed_long_ago, 31), (closed_lately, 1)):
        closed = now - timedelta(days=days)
        transaction(lambda s, m=media, c=closed: set_alert_closed(s, m.alert_id, c))

    assert prune_flow_runs()["erased_media"] == 1

    with session_scope() as session:
        assert tombstones_of(session, closed_long_ago.id)
        assert session.get(Media, closed_lately.id) and session.get(Media, open_case.id)
    assert media_left(closed_long_ago.alert_id, [closed_long_ago.id]) == []
