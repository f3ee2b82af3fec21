"""Erasure on the production path (PostgreSQL, Redis, a Prefect server, a warm worker,
uploads through the API): a voice note whose transcript says a marker phrase, a DISP photo
(enhanced) and a video, processed, then erased; afterwards no store holds the phrase, the
file names or the originals' bytes: the app database, Prefect's database (artifacts, logs,
runs), the results folder, the media root and the workers' temporary folders."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from db.erasure import tombstones_of
from db.models import Media, MediaStatus
from db.session import session_scope
from deployments.warm_worker import WORKER_TYPE as WARM
from media_pipeline.settings import get_settings
from tests.support.api import complete, start_api, upload
from tests.support.databases import PG_ADMIN_DB, PG_HOST, PG_PORT
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import stop_process, wait_until

TOKEN = "erasure-token-0123456789"
FINAL = {MediaStatus.READY, MediaStatus.PARTIAL, MediaStatus.FAILED}


@pytest.fixture
def site(production, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Set-up, a warm worker, the API and a client of it; a marker phrase in transcripts."""
    monkeypatch.setenv("MEDIA_PIPELINE_RECONCILE_SECONDS", "1")
    get_settings.cache_clear()
    production["use"](WARM)
    marker = f"marker-{uuid.uuid4().hex[:6]} lighthouse"
    production["providers"].phrase = f", {marker}"
    production["start_worker"]()
    process, base = start_api(tmp_path / "api.log", MEDIA_PIPELINE_API_TOKENS=TOKEN)
    try:
        with httpx.Client(base_url=base, timeout=120,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as client:  # fmt: skip
            yield {**production, "client": client, "marker": marker}
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


def dump_databases(prefixes: tuple[str, ...]) -> str:
    """Every row of every table of the databases whose names start with ``prefixes``, as
    text (the app's and the Prefect server's are among them)."""
    chunks = []
    with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_ADMIN_DB) as admin:
        names = [n for (n,) in admin.execute("SELECT datname FROM pg_database")
                 if n.startswith(prefixes)]  # fmt: skip
    for name in names:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=name) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (table,) in tables.fetchall():
                query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
                chunks += [row for (row,) in conn.execute(query)]
    return "\n".join(chunks)


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
    databases = dump_databases(("mp_app", "mp_prefect")).encode()
    found += [f"{what} in a database" for what, needle in needles.items() if needle in databases]
    settings = get_settings()
    workspaces = Path(tempfile.gettempdir()).glob("media-pipeline-job-*")
    stores = files_under(settings.media_root, *workspaces)
    for path in stores:
        data = path.read_bytes()
        found += [f"{what} in {path}" for what, needle in needles.items()
                  if needle in data or needle in str(path).encode()]  # fmt: skip
    return found


def test_an_erased_alert_leaves_no_copy_in_any_store(site, tmp_path: Path):
    client: httpx.Client = site["client"]
    alert = uuid.uuid4()
    made = three_media(tmp_path, alert, client)
    ids = list(made["ids"].values())
    wait_until(lambda: set(statuses(ids).values()) <= FINAL and enhanced_copy(
        made["ids"]["IMAGE"]) is not None, 180, "the three media and the copy")  # fmt: skip
    copy = enhanced_copy(made["ids"]["IMAGE"])
    wait_until(lambda: statuses([copy])[copy] in FINAL, 120, "the enhanced copy's thumbnails")
    before = leftovers(site, made)  # processed: the stores hold them now
    assert any("marker" in f for f in before) and any("bytes" in f for f in before), before

    answer = client.delete(f"/api/alerts/{alert}")

    assert answer.status_code == 200, answer.text
    receipts = {r["mediaId"]: r for r in answer.json()["media"]}
    assert set(receipts) == {str(m) for m in [*ids, copy]}
    assert answer.json()["alertRemoved"] is True
    photo = receipts[str(made["ids"]["IMAGE"])]
    assert photo["removed"]["database"]["derivatives"] == 3
    assert photo["removed"]["store"]["objects"] == 1 + 3  # the original, its derivatives
    enhanced = receipts[str(copy)]
    assert enhanced["enhancedCopy"] is True and enhanced["removed"]["store"]["objects"] == 1 + 3
    note = receipts[str(made["ids"]["AUDIO"])]
    assert note["removed"]["database"]["transcriptions"] == 1
    assert note["pending"] == {} and note["removed"]["prefect"]["runs"] == 2
    assert note["removed"]["prefect"]["artifacts"] >= 3
    for media_id in [*ids, copy]:
        gone = client.get(f"/api/media/{media_id}")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "media_erased"
    # The server deletes a run's logs in the background, a moment after the run.
    wait_until(lambda: not leftovers(site, made), 60, "every copy to be gone", interval=2)
    again = client.delete(f"/api/alerts/{alert}")  # idempotent: the same receipts
    assert {r["mediaId"]: r for r in again.json()["media"]} == receipts
    with session_scope() as session:
        assert len(tombstones_of(session, made["ids"]["IMAGE"])) == 2
