"""Object storage on a real S3-compatible server (SeaweedFS): the store itself, then the
API and two workers that share no folder, each with its own temporary root."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from deployments.worker.warm import WORKER_TYPE as WARM
from media_pipeline.errors import InvalidMedia
from media_pipeline.object_store import S3Store, StorageError, get_store, open_store
from media_pipeline.settings import get_settings
from tests.support.api import complete, start_api
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import stop_process, wait_until
from tests.support.production import wait_for_runs


def test_s3_store_round_trip_and_bound_upload_urls(s3_storage, tmp_path: Path):
    store = get_store()
    assert isinstance(store, S3Store) and store.ensure_bucket() is True
    photo = make_jpeg(tmp_path / "p.jpg", 320, 240)
    key = f"alerts/{uuid.uuid4()}/media/{uuid.uuid4()}/original.jpg"
    store.put_file(key, photo, "image/jpeg")
    assert store.size(key) == photo.stat().st_size and store.size(key + ".no") is None
    # The head and the whole size in one request; none for a missing or an empty object.
    size = photo.stat().st_size
    assert store.read_head(key, 16) == (size, photo.read_bytes()[:16])
    assert store.read_head(key, size + 100) == (size, photo.read_bytes())
    assert store.read_head(key + ".no", 16) is None
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    store.put_file(key + ".empty", empty, "image/jpeg")
    assert store.read_head(key + ".empty", 16) == (0, b"")

    # A job's workspace: the original streamed into a private folder, removed afterwards;
    # what the job writes there is published under the same keys.
    with store.workspace([key]) as root:
        assert (root / key).read_bytes() == photo.read_bytes()
        made = root / key.replace("original.jpg", "x-thumbnail.jpg")
        made.write_bytes(b"thumb")
        assert store.publish(root, [made]) == [made.relative_to(root).as_posix()]
    assert not root.exists()
    derivative = key.replace("original.jpg", "x-thumbnail.jpg")
    assert httpx.get(store.download_url(derivative, 60) or "").content == b"thumb"
    with pytest.raises(InvalidMedia, match="missing"), store.workspace([key + ".gone"]):
        pass

    # The presigned PUT is bound to its size and type: the store refuses anything else.
    url = store.upload_url("uploads/x.jpg", 5, "image/jpeg", 60) or ""
    for body, kind, status in (
        (b"12345", "image/png", 403),
        (b"123456", "image/jpeg", 403),
        (b"12345", "image/jpeg", 200),
    ):
        assert httpx.put(url, content=body, headers={"Content-Type": kind}).status_code == status
    assert store.size("uploads/x.jpg") == 5

    with pytest.raises(StorageError, match="storage key"):
        store.size("../etc/passwd")
    for bad in ("ftp://bucket", "s3://", "/some/folder"):
        with pytest.raises(StorageError, match="MEDIA_PIPELINE_STORAGE_URL"):
            open_store(get_settings().storage.model_copy(update={"storage_url": bad}))


def test_api_and_two_workers_sharing_no_folder(
    production, prefect_server: str, s3_storage, tmp_path: Path, monkeypatch
):
    """The seed's workflow with S3 storage: the bytes go to the store's presigned URL, never
    through the API; two workers, each with its own empty root, make every derivative."""
    monkeypatch.setenv("MEDIA_ROOT", str(tmp_path / "api-root"))
    monkeypatch.setenv("MEDIA_PIPELINE_API_TOKENS", "s3-test-token")
    production["use"](WARM)  # creates the bucket too
    api, base = start_api(tmp_path / "api.log", PREFECT_API_URL=prefect_server)
    roots = [tmp_path / f"worker-{i}" for i in range(2)]
    try:
        for root in roots:
            production["start_worker"](MEDIA_ROOT=str(root), PREFECT_HOME=str(root / "home"))
        client = httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": "Bearer s3-test-token"}
        )
        alert = str(uuid.uuid4())
        files = [
            (make_jpeg(tmp_path / "portrait.jpg", 1200, 1600), "image/jpeg", "IMAGE"),
            (
                make_tone(tmp_path / "note.m4a", 3.0, codec_args=("-c:a", "aac")),
                "audio/mp4",
                "AUDIO",
            ),
            (make_video(tmp_path / "clip.mp4", 3), "video/mp4", "VIDEO"),
        ]
        media, runs = [], []
        for path, mime, kind in files:
            started = client.post(
                f"/api/alerts/{alert}/media/initiate",
                json={
                    "type": kind,
                    "filename": path.name,
                    "mimeType": mime,
                    "size": path.stat().st_size,
                    "categoryCode": "DISP",
                },
            ).json()
            assert started["uploadUrl"].startswith(s3_storage["AWS_ENDPOINT_URL"])
            put = httpx.put(
                started["uploadUrl"], content=path.read_bytes(), headers=started["headers"]
            )
            assert put.status_code == 200, put.text
            media.append(started["mediaId"])
            runs += complete(client, f"/api/alerts/{alert}/media/{started['mediaId']}/complete")
        wait_for_runs(runs, timeout=400)

        views = {m: client.get(f"/api/media/{m}").json() for m in media}
        photo, note, clip = (views[m] for m in media)
        assert [v["status"] for v in (photo, note, clip)] == ["READY"] * 3, views
        pictures = {
            d["type"]: Image.open(io.BytesIO(httpx.get(d["url"]).content)).size
            for d in photo["derivatives"]
        }
        assert pictures == {"THUMBNAIL": (150, 150), "MEDIUM": (450, 600), "LARGE": (810, 1080)}
        assert {d["type"] for d in note["derivatives"]} == {"WAVEFORM"}
        assert note["transcription"]["text"]
        assert {d["type"] for d in clip["derivatives"]} == {"THUMBNAIL", "PREVIEW"}
        preview = next(d for d in clip["derivatives"] if d["type"] == "PREVIEW")
        assert httpx.get(preview["url"]).content[4:8] == b"ftyp"

        # The enhanced portrait keeps the seed's key layout, and has its own thumbnails.
        store = get_store()
        enhanced_key = f"alerts/{alert}/media/{media[0]}/{media[0]}-enhanced.jpg"
        assert store.size(enhanced_key)
        enhancement = next(j for j in photo["jobs"] if j["job"] == "ai-enhancement")
        enhanced_id = enhancement["outputs"][0]["mediaId"]
        enhanced_view = wait_for_media(client, enhanced_id)
        assert {d["type"] for d in enhanced_view["derivatives"]} == {"THUMBNAIL", "MEDIUM", "LARGE"}

        # Every job ran on a worker that had no file of its own: nothing is left there.
        leftovers = [p for root in roots for p in root.rglob("*") if "alerts" in p.parts]
        assert leftovers == []
        assert not list((tmp_path / "api-root").rglob("*.jpg"))  # the API never held bytes
        logs = "".join((production["logs"] / f"worker-{i}.log").read_text() for i in range(2))
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in logs
    finally:
        stop_process(api)


def wait_for_media(client: httpx.Client, media_id: str) -> dict:
    """The enhanced media's own runs are submitted by the run that made it."""
    view: dict = {}

    def ready() -> bool:
        view.update(client.get(f"/api/media/{media_id}").json())
        return view.get("status") == "READY"

    wait_until(ready, 300, f"media {media_id} READY", interval=1)
    return view
