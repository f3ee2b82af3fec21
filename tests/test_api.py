"""The HTTP API as a client sees it: a running ``media-pipeline api`` (uvicorn) reached over
HTTP with httpx, a real Prefect server, warm workers, local storage."""

from __future__ import annotations

import io
import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from deployments.api.security import LinkSigner
from deployments.operations.registration import register_media
from deployments.worker.warm import WORKER_TYPE as WARM
from media_pipeline.settings import get_settings
from tests.support.api import complete, start_api
from tests.support.media import make_jpeg, make_tone, make_video
from tests.support.processes import stop_process, wait_until
from tests.support.production import wait_for_runs

TOKENS = ("old-token-0123456789", "new-token-9876543210")
SECRET = "test-upload-secret"


@pytest.fixture
def api(
    production, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """Set-up on the session's server, then the API (two valid tokens) and an HTTP client."""
    production["use"](WARM)
    monkeypatch.setenv("MEDIA_PIPELINE_API_TOKENS", ",".join(TOKENS))
    monkeypatch.setenv("MEDIA_PIPELINE_UPLOAD_SECRET", SECRET)
    monkeypatch.setenv("MEDIA_PIPELINE_MAX_AUDIO_BYTES", "2000000")
    get_settings.cache_clear()
    process, base = start_api(tmp_path / "api.log", PREFECT_API_URL=prefect_server)
    headers = {"Authorization": f"Bearer {TOKENS[1]}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            yield {"client": client, "base": base, **production}
    finally:
        stop_process(process)


def initiate(
    client: httpx.Client,
    alert: str,
    path: Path,
    mime: str,
    kind: str,
    category: str | None = "AUTRE",
) -> dict[str, Any]:
    body = {
        "type": kind,
        "position": 1,
        "filename": path.name,
        "mimeType": mime,
        "size": path.stat().st_size,
    }
    if category:
        body["categoryCode"] = category
    answer = client.post(f"/api/alerts/{alert}/media/initiate", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def assert_error(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]
    return str(error["message"])


def test_seed_workflow_over_http_with_local_storage(api, tmp_path: Path):
    client: httpx.Client = api["client"]
    api["start_worker"]()
    alert = str(uuid.uuid4())
    photo = make_jpeg(tmp_path / "test.jpg", 1600, 1200, orientation=6)
    voice = make_tone(tmp_path / "note.m4a", 3.0, codec_args=("-c:a", "aac"))

    # 1. initiate, 2. PUT as the seed's curl does (a multipart form), 3. complete.
    started = initiate(client, alert, photo, "image/jpeg", "IMAGE")
    assert started["uploadUrl"].startswith(f"{api['base']}/api/uploads/presigned/")
    with photo.open("rb") as file:
        put = httpx.put(started["uploadUrl"], files={"file": ("test.jpg", file, "image/jpeg")})
    assert put.status_code == 200 and put.json()["size"] == photo.stat().st_size
    path = f"/api/alerts/{alert}/media/{started['mediaId']}/complete"
    done = client.post(path)  # answered from the app database: the run is made just after
    assert done.status_code == 202 and done.json()["status"] == "PROCESSING"
    assert done.json()["jobs"] == [{"job": "generate-thumbnails", "tier": "high", "runId": None}]
    photo_runs = complete(client, path)  # again, then the run the relay made
    again = client.post(path).json()
    assert again["runs"] == photo_runs and again["jobs"][0]["runId"] == photo_runs[0]

    # A voice note as a raw body, with the declared Content-Type.
    note = initiate(client, alert, voice, "audio/mp4", "AUDIO", category=None)
    put = httpx.put(note["uploadUrl"], content=voice.read_bytes(), headers=note["headers"])
    assert put.status_code == 200
    note_runs = complete(client, f"/api/alerts/{alert}/media/{note['mediaId']}/complete")

    wait_for_runs(photo_runs + note_runs)
    media = client.get(f"/api/media/{started['mediaId']}").json()
    assert media["status"] == "READY" and media["alertId"] == alert
    sizes = {}
    for derivative in media["derivatives"]:
        picture = Image.open(io.BytesIO(httpx.get(derivative["url"]).content))
        sizes[derivative["type"]] = picture.size
    assert sizes == {"THUMBNAIL": (150, 150), "MEDIUM": (800, 600), "LARGE": (1440, 1080)}
    original = httpx.get(media["original"]["url"])
    assert original.content == photo.read_bytes()

    voice_media = client.get(f"/api/media/{note['mediaId']}").json()
    assert voice_media["status"] == "READY" and voice_media["type"] == "AUDIO"
    assert {d["type"] for d in voice_media["derivatives"]} == {"WAVEFORM"}
    assert voice_media["transcription"]["version"] == 1

    # The seed's getJobStatus and getQueueStats.
    run = client.get(f"/api/jobs/{note_runs[0]}").json()
    assert run["state"] == "Completed" and run["progress"] == 100
    assert run["jobs"] == [
        {
            "job": "transcribe-audio",
            "mediaId": note["mediaId"],
            "state": "SUCCEEDED",
            "attempts": 1,
            "error": None,
        }
    ]
    stats = client.get("/api/queues/stats").json()
    assert set(stats) == {"high", "normal", "low", "backfill", "all"}
    assert stats["all"]["completed"] >= 3

    # One job again (the seed's enqueueMediaJob): a new transcription version.
    redo = client.post(f"/api/media/{note['mediaId']}/jobs/transcribe-audio")
    assert redo.status_code == 202 and redo.json()["runs"][0] not in note_runs
    wait_for_runs(redo.json()["runs"])
    assert client.get(f"/api/media/{note['mediaId']}").json()["transcription"]["version"] == 2
    assert_error(client.post(f"/api/media/{note['mediaId']}/retry"), 409, "nothing_to_retry")

    # A photo cut short after its header passes complete's check but fails its job; the
    # media's retry re-runs that run under its id (and it fails again: the file is bad).
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:20_000])
    broken = initiate(client, alert, cut, "image/jpeg", "IMAGE", category=None)
    httpx.put(broken["uploadUrl"], content=cut.read_bytes(), headers=broken["headers"])
    failed = complete(client, f"/api/alerts/{alert}/media/{broken['mediaId']}/complete")
    first = wait_for_runs(failed)[failed[0]]
    view = client.get(f"/api/media/{broken['mediaId']}").json()
    assert view["status"] == "FAILED" and "not retried" in view["jobs"][0]["error"]
    retried = client.post(f"/api/media/{broken['mediaId']}/retry")
    assert retried.status_code == 202 and retried.json()["runs"] == failed
    wait_until(
        lambda: client.get(f"/api/jobs/{failed[0]}").json()["attemptsMade"] > first.run_count,
        120,
        "the retried run",
    )
    assert_error(
        client.post(f"/api/media/{note['mediaId']}/jobs/generate-thumbnails"), 422, "refused"
    )


def test_every_refusal_is_a_clear_json_error(api, tmp_path: Path):
    client: httpx.Client = api["client"]
    base = api["base"]
    alert = str(uuid.uuid4())
    photo = make_jpeg(tmp_path / "photo.jpg", 640, 480)
    size = photo.stat().st_size

    # Tokens: none, a wrong one, and both of a rotation.
    body = {
        "type": "IMAGE",
        "filename": "p.jpg",
        "mimeType": "image/jpeg",
        "size": size,
        "categoryCode": "AUTRE",
    }
    url = f"{base}/api/alerts/{alert}/media/initiate"
    assert_error(httpx.post(url, json=body), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    assert_error(httpx.post(url, json=body, headers=wrong), 401, "unauthorized")
    for token in TOKENS:
        answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 201

    # Bad declarations.
    unknown = str(uuid.uuid4())
    message = assert_error(
        client.post(f"/api/alerts/{unknown}/media/initiate", json={**body, "categoryCode": None}),
        404,
        "alert_not_found",
    )
    assert f"PUT /api/alerts/{unknown}" in message
    assert_error(client.post("/api/alerts/not-a-uuid/media/initiate", json=body), 422, "invalid_id")
    assert_error(
        client.post("/api/alerts/..%2F..%2Fetc/media/initiate", json=body), 404, "not_found"
    )
    assert_error(client.post(url, json={**body, "mimeType": "text/html"}), 422, "unsupported_media")
    assert_error(client.post(url, json={**body, "type": "AUDIO"}), 422, "unsupported_media")
    assert_error(client.post(url, json={**body, "size": -1}), 422, "invalid_request")
    assert_error(client.post(url, json={**body, "categoryCode": "DISP"}), 409, "category_conflict")
    assert_error(
        client.post(
            url, json={**body, "type": "AUDIO", "mimeType": "audio/mp4", "size": 3_000_000}
        ),
        413,
        "too_large",
    )
    assert client.put(f"/api/alerts/{alert}", json={"categoryCode": "DISP"}).json() == {
        "alertId": alert,
        "categoryCode": "DISP",
        "created": False,
    }

    # Upload URLs: bound to their media, unexpired, the declared type and size.
    first, second = (initiate(client, alert, photo, "image/jpeg", "IMAGE", None) for _ in range(2))
    query = first["uploadUrl"].split("?")[1]
    stolen = f"{base}/api/uploads/presigned/{second['mediaId']}?{query}"
    headers = {"Content-Type": "image/jpeg"}
    assert_error(
        httpx.put(stolen, content=photo.read_bytes(), headers=headers), 403, "upload_url_invalid"
    )
    past = int(time.time()) - 10
    signature = LinkSigner(get_settings()).sign(
        "upload", first["mediaId"], size, "image/jpeg", expires=past
    )
    expired = (
        f"{base}/api/uploads/presigned/{first['mediaId']}?expires={past}&signature={signature}"
    )
    assert_error(
        httpx.put(expired, content=photo.read_bytes(), headers=headers), 403, "upload_url_expired"
    )
    assert_error(
        httpx.put(
            first["uploadUrl"], content=photo.read_bytes(), headers={"Content-Type": "image/png"}
        ),
        403,
        "content_type_mismatch",
    )
    assert_error(
        httpx.put(first["uploadUrl"], content=photo.read_bytes() + b"x" * 10, headers=headers),
        413,
        "size_mismatch",
    )
    assert_error(
        httpx.put(first["uploadUrl"], content=photo.read_bytes()[:-10], headers=headers),
        400,
        "size_mismatch",
    )
    complete = f"/api/alerts/{alert}/media/{first['mediaId']}/complete"
    assert_error(client.post(complete), 409, "upload_missing")  # nothing was kept

    # Content that is not what was declared, and a decompression bomb.
    png = tmp_path / "photo.png"
    Image.open(photo).save(png, "PNG")
    fake = initiate(client, alert, png, "image/jpeg", "IMAGE", None)
    httpx.put(fake["uploadUrl"], content=png.read_bytes(), headers=headers)
    message = assert_error(
        client.post(f"/api/alerts/{alert}/media/{fake['mediaId']}/complete"),
        422,
        "content_mismatch",
    )
    assert "PNG" in message
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    bombed = initiate(client, alert, bomb, "image/png", "IMAGE", None)
    httpx.put(bombed["uploadUrl"], content=bomb.read_bytes(), headers={"Content-Type": "image/png"})
    message = assert_error(
        client.post(f"/api/alerts/{alert}/media/{bombed['mediaId']}/complete"),
        422,
        "content_mismatch",
    )
    assert "decompression bomb" in message

    # Audio and video hold to their declaration too: a video declared as a voice note, a
    # WAV declared audio/mpeg (it would have been kept as original.mp3).
    clip, wav = make_video(tmp_path / "clip.mp4", 2), make_tone(tmp_path / "note.wav", 1.0)
    for path, mime, kind, said in (
        (clip, "audio/mp4", "AUDIO", "video stream"),
        (wav, "audio/mpeg", "AUDIO", "WAV audio"),
    ):
        started = initiate(client, alert, path, mime, kind, None)
        httpx.put(started["uploadUrl"], content=path.read_bytes(), headers={"Content-Type": mime})
        done = client.post(f"/api/alerts/{alert}/media/{started['mediaId']}/complete")
        assert said in assert_error(done, 422, "content_mismatch")

    # The right upload, completed under another alert, then its own.
    assert (
        httpx.put(first["uploadUrl"], content=photo.read_bytes(), headers=headers).status_code
        == 200
    )
    assert_error(
        client.post(f"/api/alerts/{unknown}/media/{first['mediaId']}/complete"),
        404,
        "media_not_found",
    )
    assert client.post(complete).status_code == 202
    assert_error(
        httpx.put(first["uploadUrl"], content=photo.read_bytes(), headers=headers),
        409,
        "already_completed",
    )

    # Reads of things that do not exist, and links not signed by the API.
    assert_error(client.get(f"/api/media/{uuid.uuid4()}"), 404, "media_not_found")
    assert_error(client.get(f"/api/jobs/{uuid.uuid4()}"), 404, "run_not_found")
    assert_error(client.get("/api/jobs/not-a-run"), 422, "invalid_id")
    assert_error(client.post(f"/api/media/{first['mediaId']}/jobs/rm-rf"), 422, "refused")
    assert_error(
        httpx.get(f"{base}/api/files/..%2F..%2Fetc%2Fpasswd?expires=9999999999&signature=x"),
        403,
        "link_invalid",
    )
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    docs = httpx.get(f"{base}/openapi.json").json()
    assert "/api/alerts/{alert_id}/media/initiate" in docs["paths"]


@pytest.mark.usefixtures("prefect_server")
def test_with_a_prefect_server_the_api_needs_its_tokens_from_the_environment():
    from typer.testing import CliRunner

    from deployments.cli.app import app

    result = CliRunner().invoke(app, ["api", "--port", "9"])
    assert result.exit_code == 2
    assert "set MEDIA_PIPELINE_API_TOKENS" in result.output
    assert not (get_settings().storage.data_dir / "api-token").exists()


def test_hostile_inputs_get_a_4xx_and_the_error_json(api, tmp_path: Path):
    client: httpx.Client = api["client"]
    base = api["base"]
    alert = str(uuid.uuid4())
    photo = make_jpeg(tmp_path / "photo.jpg", 640, 480)
    body = {"type": "IMAGE", "filename": "p.jpg", "mimeType": "image/jpeg", "categoryCode": "AUTRE"}
    for size in ("100", True, 1.5):  # only a JSON integer is a size
        answer = client.post(f"/api/alerts/{alert}/media/initiate", json={**body, "size": size})
        assert_error(answer, 422, "invalid_request")
    started = initiate(client, alert, photo, "image/jpeg", "IMAGE")
    url = started["uploadUrl"]
    non_ascii = url.split("&signature=")[0] + "&signature=%C3%A9%C3%A9"
    assert_error(httpx.put(non_ascii, content=photo.read_bytes()), 403, "upload_url_invalid")
    assert_error(
        httpx.get(f"{base}/api/files/a.jpg?expires=9999999999&signature=%C3%A9"),
        403,
        "link_invalid",
    )
    no_boundary = {"Content-Type": "multipart/form-data"}
    assert_error(
        httpx.put(url, content=b"--x\r\n\r\n", headers=no_boundary), 400, "invalid_multipart"
    )
    two_files = httpx.put(url, files=[("a", ("a.jpg", b"1")), ("b", ("b.jpg", b"2"))])
    assert_error(two_files, 400, "invalid_multipart")

    with photo.open("rb") as file:  # the refusals lost nothing: the upload still works
        assert httpx.put(url, files={"file": ("photo.jpg", file, "image/jpeg")}).status_code == 200
    media_id = started["mediaId"]
    assert client.post(f"/api/alerts/{alert}/media/{media_id}/complete").status_code == 202
    original = client.get(f"/api/media/{media_id}").json()["original"]["url"]
    served = httpx.get(original)
    assert served.status_code == 200 and served.content == photo.read_bytes()
    assert served.headers["x-content-type-options"] == "nosniff"


def test_a_large_body_is_refused_unread_and_an_aborted_upload_is_one_log_line(api, tmp_path: Path):
    import socket
    from urllib.parse import urlsplit

    client: httpx.Client = api["client"]
    alert = str(uuid.uuid4())
    huge = {"type": "IMAGE", "filename": "x" * 2_000_000, "mimeType": "image/jpeg", "size": 1}
    assert_error(
        client.post(f"/api/alerts/{alert}/media/initiate", json=huge), 413, "body_too_large"
    )
    photo = make_jpeg(tmp_path / "photo.jpg", 640, 480)
    started = initiate(client, alert, photo, "image/jpeg", "IMAGE")
    url = urlsplit(started["uploadUrl"])
    with socket.create_connection((url.hostname, url.port)) as raw:  # half, then gone
        raw.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: {photo.stat().st_size}\r\n"
            "\r\n".encode()
            + photo.read_bytes()[:1000]
        )
        time.sleep(0.5)

    log = api["logs"] / "api.log"
    wait_until(lambda: "aborted by the client" in log.read_text(), 10, "the abort's log line")
    assert "Traceback" not in log.read_text()
    with photo.open("rb") as file:  # nothing kept of the half: the upload works after it
        answer = httpx.put(started["uploadUrl"], files={"file": ("photo.jpg", file)})
    assert answer.status_code == 200 and answer.json()["size"] == photo.stat().st_size


def test_backfills_over_http(api, tmp_path: Path):
    client: httpx.Client = api["client"]
    api["start_worker"](limit=2)
    for i in range(3):
        register_media(make_jpeg(tmp_path / f"old-{i}.jpg", 640, 480, seed=i))
    body = {"job": "generate-thumbnails", "select": "missing", "type": "IMAGE"}

    estimate = client.post("/api/backfills", json=body | {"dryRun": True})
    assert estimate.status_code == 200, estimate.text
    assert estimate.json()["count"] == 3 and estimate.json()["types"] == {"IMAGE": 3}
    pace = get_settings().orchestration.backfill_per_minute
    assert estimate.json()["paceMinutes"] == round(3 / pace, 1)  # the least it can take

    started = client.post("/api/backfills", json=body)
    assert started.status_code == 201, started.text
    backfill = started.json()
    assert backfill["status"] == "PENDING" and backfill["estimate"]["count"] == 3
    assert backfill["counts"]["selected"] == 3 and backfill["flowRunId"]

    def done() -> bool:
        backfill.update(client.get(f"/api/backfills/{backfill['id']}").json())
        return backfill["status"] == "DONE"

    wait_until(done, 120, "the backfill to end", interval=0.5)
    assert backfill["counts"]["done"] == 3 and backfill["counts"]["failed"] == 0
    assert client.delete(f"/api/backfills/{backfill['id']}").json()["status"] == "DONE"
    assert [b["id"] for b in client.get("/api/backfills").json()][:1] == [backfill["id"]]

    assert_error(client.get(f"/api/backfills/{uuid.uuid4()}"), 404, "backfill_not_found")
    assert_error(client.get("/api/backfills/not-an-id"), 422, "invalid_id")
    assert "unknown job" in assert_error(
        client.post("/api/backfills", json=body | {"job": "nope"}), 422, "refused"
    )
    assert_error(
        client.post("/api/backfills", json=body | {"select": "newest"}), 422, "invalid_request"
    )
    assert "works on IMAGE" in assert_error(
        client.post("/api/backfills", json=body | {"type": "AUDIO"}), 422, "refused"
    )
    schemas = httpx.get(f"{api['base']}/openapi.json").json()["components"]["schemas"]
    assert {"BackfillView", "Estimate", "Counts"} <= set(schemas)
    assert "jobVersion" in schemas["BackfillView"]["properties"]


def junk(rng: random.Random) -> str:
    """A hostile value: bytes, an id of the wrong kind, traversal, markup, a huge string."""
    return rng.choice(
        [
            str(uuid.uuid4()),
            "not-an-id",
            "é" * 3,
            "..%2F..%2Fetc%2Fpasswd",
            "%00",
            "-1",
            "1e309",
            "<script>x</script>",
            "a" * 3000,
            "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(20)),
        ]
    )


def test_random_input_at_every_route_never_gets_a_5xx(api):
    """Every route of the OpenAPI document, with random ids, query strings, headers and
    bodies, authorised or not: 4xx at worst, never a 5xx, and the connection goes on."""
    client: httpx.Client = api["client"]
    rng = random.Random(30)
    paths = httpx.get(f"{api['base']}/openapi.json").json()["paths"]
    routes = [(method.upper(), path) for path, item in paths.items() for method in item]
    assert len(routes) >= 15
    answers: list[int] = []
    for method, path in routes:
        for _ in range(12):
            url = re.sub(r"\{[^}]+\}", lambda _: quote(junk(rng), safe="%"), path)
            query = {
                rng.choice(["signature", "expires", "since", "x", junk(rng)]): junk(rng)
                for _ in range(rng.randrange(3))
            }
            headers = {
                "Content-Type": rng.choice(
                    [
                        "application/json",
                        "multipart/form-data",
                        "multipart/form-data; boundary=x",
                        "text/plain",
                        junk(rng)[:100],
                    ]
                )
            }
            if rng.random() < 0.3:
                headers["Authorization"] = rng.choice(["Bearer nope", "Basic x", junk(rng)])
            fields = {"job": junk(rng), "select": junk(rng), "type": junk(rng), "size": junk(rng)}
            body = rng.choice(
                [
                    rng.randbytes(rng.randrange(200)),
                    b"{}",
                    b"[]",
                    b"null",
                    json.dumps(fields).encode(),
                ]
            )
            try:
                sent = {k: v.encode("latin-1", "replace") for k, v in headers.items()}
                answer = client.request(method, url, params=query, content=body, headers=sent)
            except httpx.LocalProtocolError:
                continue  # a header httpx itself refuses to send
            answers.append(answer.status_code)
            assert answer.status_code < 500, (method, url, answer.status_code, answer.text[:300])
    assert len(answers) > 150 and client.get("/health").status_code == 200


def test_every_answer_of_the_api_has_a_camel_case_schema():
    """The OpenAPI document names the model of every answer (a file is a file)."""
    from deployments.api.app import create_app

    document = create_app().openapi()
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            ok = next(code for code in operation["responses"] if code.startswith("2"))
            content = operation["responses"][ok].get("content", {}).get("application/json", {})
            if path != "/api/files/{key}":
                assert "$ref" in str(content["schema"]), (method, path, content)
    assert "mediaId" in schemas["MediaView"]["properties"]
    assert "oldestWaitingSeconds" in schemas["QueueStats"]["properties"]
    assert "uploadUrl" in schemas["Initiated"]["properties"]
    # Ids are UUIDs where they enter: every id in a path, and in the answers.
    id_parameters = [
        (path, parameter["schema"].get("format"))
        for path, item in document["paths"].items()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path" and parameter["name"].endswith("_id")
    ]
    assert len(id_parameters) >= 10 and {f for _, f in id_parameters} == {"uuid"}, id_parameters
    assert schemas["Initiated"]["properties"]["mediaId"]["format"] == "uuid"
    assert schemas["MediaView"]["properties"]["alertId"]["format"] == "uuid"
