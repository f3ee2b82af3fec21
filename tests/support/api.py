"""``media-pipeline api`` as a real process on a free port, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.support.processes import free_port, http_ok, start_process, wait_until

SCRIPT = str(Path(sys.executable).parent / "media-pipeline")


def start_api(
    log: Path,
    *,
    timeout: float = 120,
    cwd: Path | None = None,
    base_env: dict[str, str] | None = None,
    **env: str,
) -> tuple[subprocess.Popen[bytes], str]:
    """The API with ``base_env`` (this process's environment) plus ``env``; its base URL
    once it answers."""
    port = free_port()
    process = start_process(
        [SCRIPT, "api", "--host", "127.0.0.1", "--port", str(port)],
        {**(base_env or os.environ), **env},
        log,
        cwd=cwd,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited:\n{log.read_text()[-3000:]}")
        return http_ok(f"{base}/health")

    wait_until(up, timeout, "the API", interval=0.3)
    return process, base


MIME = {"IMAGE": "image/jpeg", "AUDIO": "audio/mp4", "VIDEO": "video/mp4"}


def upload(
    client: httpx.Client,
    path: Path,
    kind: str,
    alert: uuid.UUID | None = None,
    category: str = "AUTRE",
) -> tuple[uuid.UUID, str]:
    """initiate and PUT, as the app does (by default in a new alert of category AUTRE):
    the media id and the path of its complete call."""
    alert = alert or uuid.uuid4()
    answer = client.post(
        f"/api/alerts/{alert}/media/initiate",
        json={
            "type": kind,
            "position": 1,
            "filename": path.name,
            "mimeType": MIME[kind],
            "size": path.stat().st_size,
            "categoryCode": category,
        },
    )
    assert answer.status_code == 201, answer.text
    started = answer.json()
    put = httpx.put(
        started["uploadUrl"], content=path.read_bytes(), headers=started["headers"], timeout=60
    )
    assert put.status_code < 300, put.text
    return uuid.UUID(started["mediaId"]), f"/api/alerts/{alert}/media/{started['mediaId']}/complete"


def complete(client: httpx.Client, path: str, patience: float = 180) -> list[str]:
    """complete (202 at once: it answers from the app database), then the media's runs,
    highest tier first, once the API's relay has made them (``GET /api/media/<id>``), as a
    client that follows them does."""
    answer = client.post(path)
    assert answer.status_code == 202, answer.text
    media_id, planned = answer.json()["mediaId"], answer.json()["jobs"]
    deadline = time.monotonic() + patience
    while True:
        jobs = client.get(f"/api/media/{media_id}").json()["jobs"]
        runs = {job["job"]: job["flowRunId"] for job in jobs}
        if all(runs.get(job["job"]) for job in planned):  # highest tier first, as planned
            return list(dict.fromkeys(runs[job["job"]] for job in planned))
        if time.monotonic() > deadline:
            raise AssertionError(f"no runs for media {media_id} after {patience} s: {jobs}")
        time.sleep(0.05)
