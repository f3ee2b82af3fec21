"""The outbox and its relays (``db/outbox.py``, ``flows/relay.py``) against the session's
Prefect server: planned runs are created once, in the order they were accepted, by
whichever relay claims them first; a run Prefect refuses fails its jobs alone; two API
processes over one database, one of them killed while its batch is in flight, create every
run exactly once."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select, update

from db.jobs import job_rows
from db.models import JobState, Media, MediaStatus, OutboxRun
from db.outbox import outbox_depth
from db.session import session_scope, transaction
from deployments.operations.erasure import erase_media
from deployments.operations.registration import register_media
from deployments.worker.warm import WORKER_TYPE as WARM
from flows.relay import relay_pass
from flows.submission import plan_submission
from tests.support.api import start_api, upload
from tests.support.media import make_jpeg
from tests.support.processes import stop_process, wait_until


def runs_of_alert(alert: uuid.UUID) -> dict[str, list[Any]]:
    """Media id -> the flow runs Prefect holds for it (runs are tagged at creation)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"alert-{alert}"])),
            limit=200,
        )
    by_media: dict[str, list[Any]] = {}
    for run in runs:
        media = next(t[6:] for t in run.tags if t.startswith("media-") and len(t) == 42)
        by_media.setdefault(media, []).append(run)
    return by_media


def delete_runs(runs: list[Any]) -> None:
    """No worker of a later test may pick them up."""
    with get_client(sync_client=True) as client:
        for run in runs:
            client.delete_flow_run(run.id)


def test_relays_create_planned_runs_once_in_order_and_a_refusal_fails_its_jobs(
    production, tmp_path: Path
):
    production["use"](WARM)
    alert = uuid.uuid4()
    photos = [
        register_media(make_jpeg(tmp_path / f"p{i}.jpg", 320, 240, seed=i), alert, "AUTRE")
        for i in range(7)
    ]
    for photo in photos:  # what complete does: the jobs and their runs, planned
        transaction(lambda session, photo=photo: plan_submission(session, photo.id))
    refused = photos[3]
    with session_scope() as session:  # a job variable of the wrong type: Prefect refuses it
        row = session.scalar(select(OutboxRun).where(OutboxRun.media_id == refused.id))
        row.body = {**row.body, "job_variables": {"stream_output": "loud"}}
        assert outbox_depth(session).runs == 7

    with get_client(sync_client=True) as client, ThreadPoolExecutor(2) as pool:
        taken = list(pool.map(lambda _: relay_pass(client), range(2)))  # two relays at once
    assert sum(taken) == 7

    with session_scope() as session:
        assert outbox_depth(session).runs == 0
        rows = {photo.id: job_rows(session, photo.id)["generate-thumbnails"] for photo in photos}
        assert rows[refused.id].state is JobState.FAILED
        assert "stream_output" in (rows[refused.id].error or "")
        assert session.get(Media, refused.id).status is MediaStatus.FAILED
        # A second complete of a media whose run exists plans no other.
        plan_submission(session, photos[0].id)
        assert outbox_depth(session).runs == 0

    made = runs_of_alert(alert)
    try:
        accepted = [photo for photo in photos if photo is not refused]
        assert sorted(made) == sorted(str(p.id) for p in accepted)
        assert all(len(runs) == 1 for runs in made.values())
        for photo in accepted:
            (run,) = made[str(photo.id)]
            assert str(run.id) == rows[photo.id].flow_run_id
            assert run.parameters == {"media_id": str(photo.id), "tier": "high"}
            assert run.state is not None and run.state.is_scheduled()
        created = [made[str(p.id)][0].created for p in accepted]
        assert created == sorted(created)  # in the order they were accepted
    finally:
        delete_runs([run for runs in made.values() for run in runs])


class StallingProxy:
    """An HTTP proxy to the Prefect API that holds run creations until ``release``: by
    default it forwards them first and holds their answers (the relay behind it dies with
    its runs made but not recorded, the worst moment for it to die); with
    ``forward_first=False`` it holds them before Prefect sees them."""

    def __init__(self, upstream: str, forward_first: bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        self.stalled = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                creation = self.path.endswith("/create_flow_run/bulk")
                if creation and not forward_first:
                    proxy.stalled.set()
                    proxy.release.wait()
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                answer = httpx.request(
                    self.command,
                    proxy.upstream + self.path.removeprefix("/api"),
                    content=body,
                    headers=headers,
                    timeout=60,
                )
                if creation and forward_first:
                    proxy.stalled.set()
                    proxy.release.wait()
                self.send_response(answer.status_code)
                if "content-type" in answer.headers:
                    self.send_header("Content-Type", answer.headers["content-type"])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_two_api_relays_and_a_relay_killed_mid_batch_create_each_run_once(
    production, prefect_server: str, tmp_path: Path
):
    production["use"](WARM)
    token = "relay-token-0123456789"
    fast = {
        "MEDIA_PIPELINE_API_TOKENS": token,
        "MEDIA_PIPELINE_RELAY_LEASE_SECONDS": "3",
        "MEDIA_PIPELINE_RELAY_POLL_SECONDS": "0.2",
    }
    headers = {"Authorization": f"Bearer {token}"}
    alert = uuid.uuid4()
    photo = make_jpeg(tmp_path / "photo.jpg", 320, 240)
    proxy = StallingProxy(prefect_server)
    apis: list[Any] = []
    made: dict[str, list[Any]] = {}
    try:
        # 1. An API whose relay dies with its batch in flight (the runs made in Prefect).
        doomed, base = start_api(tmp_path / "doomed.log", PREFECT_API_URL=proxy.url, **fast)
        apis.append(doomed)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            first = [upload(client, photo, "IMAGE", alert) for _ in range(4)]
            answers = [client.post(path) for _, path in first]
        assert [a.status_code for a in answers] == [202] * 4
        assert all(a.json()["jobs"][0]["tier"] == "high" for a in answers)
        assert proxy.stalled.wait(30), "the relay never sent its batch"
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
        with session_scope() as session:  # claimed by the dead relay, not recorded
            assert outbox_depth(session).runs >= 1

        # 2. Two APIs over the same database, uploads through both at once.
        clients = []
        for name in ("one", "two"):
            process, base = start_api(
                tmp_path / f"{name}.log", PREFECT_API_URL=prefect_server, **fast
            )
            apis.append(process)
            clients.append(httpx.Client(base_url=base, headers=headers, timeout=30))

        def through(index: int) -> list[uuid.UUID]:
            client = clients[index % 2]
            media_id, path = upload(client, photo, "IMAGE", alert)
            assert client.post(path).status_code == 202
            return [media_id]

        with ThreadPoolExecutor(4) as pool:
            second = [m for done in pool.map(through, range(16)) for m in done]
        media = [m for m, _ in first] + second

        def all_made() -> bool:
            with session_scope() as session:
                if outbox_depth(session).runs:
                    return False
                return all(job_rows(session, m)["generate-thumbnails"].flow_run_id for m in media)

        wait_until(all_made, 60, "every planned run to be made")
        made = runs_of_alert(alert)
        assert sorted(made) == sorted(str(m) for m in media)
        assert {len(runs) for runs in made.values()} == {1}  # exactly once each
        with session_scope() as session:
            for m in media:
                row = job_rows(session, m)["generate-thumbnails"]
                assert row.flow_run_id == str(made[str(m)][0].id)
        for client in clients:
            view = client.get(f"/api/media/{media[0]}").json()
            assert view["jobs"][0]["flowRunId"] == str(made[str(media[0])][0].id)
            client.close()
    finally:
        proxy.close()
        for process in apis:
            stop_process(process)
        delete_runs([run for runs in made.values() for run in runs])


def test_claims_of_a_dead_relay_are_taken_again_after_its_lease(production, tmp_path: Path):
    """The lease alone, without processes: a row claimed by a relay that never came back."""
    production["use"](WARM)
    alert = uuid.uuid4()
    photo = register_media(make_jpeg(tmp_path / "p.jpg", 320, 240), alert, "AUTRE")
    transaction(lambda session: plan_submission(session, photo.id))
    now = datetime.now(UTC)
    with session_scope() as session:  # a live lease: nobody else takes it
        session.execute(update(OutboxRun).values(claimed_until=now + timedelta(hours=1)))
    with get_client(sync_client=True) as client:
        assert relay_pass(client) == 0
        with session_scope() as session:  # the lease ran out
            session.execute(update(OutboxRun).values(claimed_until=now - timedelta(seconds=1)))
        assert relay_pass(client) == 1
    made = runs_of_alert(alert)
    try:
        assert len(made[str(photo.id)]) == 1
    finally:
        delete_runs(made[str(photo.id)])


def test_a_run_made_for_a_media_erased_meanwhile_is_deleted(
    production, prefect_server: str, tmp_path: Path
):
    """The relay claimed the media's run, the media was erased, then Prefect made the run:
    the relay deletes it, so no copy of the erased media's ids stays in Prefect."""
    production["use"](WARM)
    alert = uuid.uuid4()
    photo = register_media(make_jpeg(tmp_path / "p.jpg", 320, 240), alert, "AUTRE")
    transaction(lambda session: plan_submission(session, photo.id))
    proxy = StallingProxy(prefect_server, forward_first=False)
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: proxy.url}),
            get_client(sync_client=True) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            relaying = pool.submit(relay_pass, client)
            assert proxy.stalled.wait(30), "the relay never sent its batch"
            (receipt,) = erase_media([str(photo.id)], client)
            assert receipt["pending"] == {}
            proxy.release.set()
            assert relaying.result(60) == 1
    finally:
        proxy.close()
    assert runs_of_alert(alert) == {}
    with session_scope() as session:
        assert outbox_depth(session).runs == 0
