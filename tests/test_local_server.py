"""The embedded default as a person runs it: whole ``media-pipeline`` processes with no
PREFECT_API_URL. The first command starts the local Prefect server, later ones reuse it,
``server stop`` stops it, and it stops by itself when idle."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import httpx

from deployments.local.server import prepare_database_template, seed_database
from tests.support.embedded import (
    alive,
    cli,
    embedded_env,
    server_state,
    service_ready,
    service_states,
)
from tests.support.media import make_jpeg
from tests.support.processes import (
    free_port,
    http_ok,
    start_process,
    stop_process,
    wait_until,
)


def test_later_commands_go_to_the_local_service_then_everything_stops(tmp_path: Path):
    """The first ``process`` starts the local server and runs in-process, then leaves the
    local service running; the next ones hand their file to it; ``server stop`` stops both."""
    photo = make_jpeg(tmp_path / "p.jpg", 1600, 1200)
    env = embedded_env(tmp_path / "data")
    try:
        first = cli(env, "process", str(photo), "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        assert json.loads(first.stdout)["status"] == "READY"
        assert "local service" not in first.stderr
        state_file = tmp_path / "data" / "prefect-server" / "server.json"
        pid = json.loads(state_file.read_text())["pid"]
        assert alive(pid)
        [service] = service_states(tmp_path / "data")
        wait_until(lambda: service_ready(service["url"]), 300, "the local service")

        second = cli(env, "process", str(photo), "--json")
        assert second.returncode == 0, second.stderr[-2000:]
        summary = json.loads(second.stdout)
        assert summary["status"] == "READY" and summary["filename"] == "p.jpg"
        outputs = {o["type"] for o in summary["jobs"][0]["outputs"]}
        assert outputs == {"THUMBNAIL", "MEDIUM", "LARGE"}
        assert f"processed by the local service at {service['url']}" in second.stderr
        assert json.loads(state_file.read_text())["pid"] == pid  # the same server

        # The operators' commands read the same server and database, not one of their own.
        run_id = summary["jobs"][0]["flow_run_id"]
        status = cli(env, "status", run_id)
        assert status.returncode == 0, status.stderr[-2000:]
        assert json.loads(status.stdout)["state"] == "Completed"
        board = cli(env, "stats", "--json")
        assert board.returncode == 0, board.stderr[-2000:]
        assert json.loads(board.stdout)["last_hour"]["all"]["completed"] >= 1
        failed = cli(env, "failed", "--json")
        assert failed.returncode == 0 and json.loads(failed.stdout) == [], failed.stderr[-2000:]
        assert "temporary server" not in status.stderr + board.stderr + failed.stderr
        status = cli(env, "server", "status")
        assert status.returncode == 0 and "running at http://127.0.0.1:" in status.stdout
        server_url = json.loads(state_file.read_text())["url"]  # its UI asks its own API
        ui = httpx.get(f"{server_url.removesuffix('/api')}/ui-settings").json()
        assert ui["api_url"] == server_url
        assert f"local service at {service['url']}" in status.stdout
    finally:
        stopped = cli(env, "server", "stop")
    assert stopped.stdout.strip() == "stopped"
    wait_until(lambda: not alive(pid) and not alive(service["pid"]), 60, "everything to stop")
    assert cli(env, "server", "status").stdout.strip() == "not running"


def test_an_idle_local_server_stops_by_itself(tmp_path: Path):
    env = embedded_env(tmp_path / "data", MEDIA_PIPELINE_LOCAL_SERVER_IDLE_SECONDS="4")
    started = cli(env, "server", "start")
    try:
        assert started.returncode == 0 and started.stdout.startswith("http://127.0.0.1:")
        state = server_state(tmp_path / "data")
        assert state is not None
        wait_until(lambda: not alive(state["pid"]), 60, "the idle server to stop")
    finally:
        cli(env, "server", "stop")
    assert cli(env, "server", "status").stdout.strip() == "not running"


def test_a_fresh_local_server_starts_from_the_migrated_template(tmp_path: Path):
    template = prepare_database_template()  # made by make setup; here if it did not
    assert template.name == f"prefect-{version('prefect')}-blocks.db"
    database = tmp_path / "prefect.db"
    assert seed_database(database) is True
    assert database.read_bytes() == template.read_bytes()
    database.write_bytes(b"in use")
    assert seed_database(database) is False and database.read_bytes() == b"in use"
    with sqlite3.connect(template) as connection:  # migrated: Prefect's tables are there
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        block_types = connection.execute("SELECT count(*) FROM block_type").fetchone()[0]
    assert {"flow_run", "deployment", "work_pool", "alembic_version"} <= tables
    assert block_types > 20  # registered, as a server's first start would


def test_the_local_server_takes_concurrent_writers_without_refusing_any(tmp_path: Path):
    """Stock Prefect on SQLite answers 503 ("database is locked") to most of these requests
    (289 of 344 when tried), and its client then waits 2 s: the local server makes
    writers wait their turn instead."""
    database = tmp_path / "prefect.db"
    seed_database(database)
    env = {
        **embedded_env(tmp_path / "data"),
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
        "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    }
    port = free_port()
    server = start_process(
        [sys.executable, "-m", "deployments.local.prefect_server", "127.0.0.1", str(port)],
        env,
        tmp_path / "server.log",
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), 120, "the local Prefect server")
        flow_id = httpx.post(f"{url}/flows/", json={"name": "writers"}).json()["id"]

        def run_through(index: int) -> list[int]:
            with httpx.Client(base_url=url, timeout=60) as client:  # no retries: see all
                created = client.post(
                    "/flow_runs/", json={"flow_id": flow_id, "name": f"run-{index}"}
                )
                codes = [created.status_code]
                for state in ("PENDING", "RUNNING", "COMPLETED"):
                    codes.append(
                        client.post(
                            f"/flow_runs/{created.json()['id']}/set_state",
                            json={"state": {"type": state}, "force": True},
                        ).status_code
                    )
                return codes

        with ThreadPoolExecutor(12) as pool:
            codes = [code for run in pool.map(run_through, range(120)) for code in run]
        ended = httpx.post(
            f"{url}/flow_runs/count",
            json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
        ).json()
    finally:
        stop_process(server)
    assert Counter(codes) == {201: 480}
    assert ended == 120


def test_the_embedded_default_is_closed_to_the_machines_other_users(tmp_path: Path):
    """The local server asks for credentials kept 0600 under the data dir, the data dir is
    0700 and every file in it 0600, and the server's processes hold no provider key."""
    photo = make_jpeg(tmp_path / "p.jpg", 640, 480)
    data = tmp_path / "data"
    env = {**embedded_env(data), "OPENAI_API_KEY": "sk-never-in-the-prefect-server-0123"}
    try:
        done = cli(env, "process", str(photo), "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        state = server_state(data)
        assert state is not None
        url, auth_file = state["url"], data / "prefect-server" / "auth"

        assert httpx.post(f"{url}/flows/filter", json={}).status_code == 401
        auth = auth_file.read_text().strip()
        assert (
            httpx.post(f"{url}/flows/filter", json={}, auth=tuple(auth.split(":", 1))).status_code
            == 200
        )
        assert f"credentials in {auth_file}" in cli(env, "server", "status").stdout

        assert data.stat().st_mode & 0o777 == 0o700
        files = [p for p in data.rglob("*") if p.is_file()]
        assert auth_file in files and len(files) > 5
        assert [p for p in files if p.stat().st_mode & 0o077] == []
        environs = [
            Path(f"/proc/{pid}/environ").read_bytes() for pid in process_tree(int(state["pid"]))
        ]  # the watcher, the server
        assert len(environs) >= 2 and not [e for e in environs if b"OPENAI_API_KEY" in e]
        assert any(b"PREFECT_SERVER_API_AUTH_STRING" in e for e in environs)
    finally:
        cli(env, "server", "stop")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]
