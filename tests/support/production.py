"""The production profile for end-to-end tests: a callback receiver, set-up of a pool of
either worker type, workers of that pool, and waiting for flow runs as the server records
them. Registered as a pytest plugin by ``tests/conftest.py``."""

from __future__ import annotations

import os
import subprocess
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

from deployments.operations.setup import setup
from deployments.worker.warm import WORKER_TYPE as WARM
from media_pipeline.settings import get_settings
from tests.support.processes import start_process, stop_process, wait_until

# Workers start as the README says, by the `prefect` script of this environment.
PREFECT_SCRIPT = str(Path(sys.executable).parent / "prefect")


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
def production(
    prefect_server, postgres_app_db, fake_providers, tmp_path, monkeypatch
) -> Iterator[dict]:
    """A callback receiver, set-up of a pool of either worker type, and a way to start
    workers of that pool (stopped at the end)."""
    receiver = Receiver()
    monkeypatch.setenv("MEDIA_PIPELINE_CALLBACK_URL", receiver.url)
    monkeypatch.setenv("MEDIA_PIPELINE_CALLBACK_SECRET", "callback-secret")
    monkeypatch.setenv("MEDIA_ROOT", str(tmp_path / "shared-media"))
    workers: list = []

    def use(worker_type: str) -> str:
        """Set-up for a pool of ``worker_type`` (the deployments move to it); its name."""
        pool = "media" if worker_type == WARM else f"media-{worker_type}"
        monkeypatch.setenv("MEDIA_PIPELINE_WORK_POOL", pool)
        monkeypatch.setenv("MEDIA_PIPELINE_WORKER_TYPE", worker_type)
        get_settings.cache_clear()
        setup()
        return pool

    def start_worker(
        limit: int | None = None,
        query_seconds: int = 1,
        ignore_sigint: bool = False,
        **extra_env: str,
    ) -> subprocess.Popen[bytes]:
        orchestration = get_settings().orchestration
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "0",
            **extra_env,
        }
        # No --type: the worker's type is the pool's, found among the installed collections.
        args = [
            PREFECT_SCRIPT,
            "worker",
            "start",
            "--pool",
            orchestration.work_pool,
            "--name",
            f"test-worker-{len(workers)}",
        ]
        if limit:
            args += ["--limit", str(limit)]
        log = tmp_path / f"worker-{len(workers)}.log"
        workers.append(start_process(args, env, log, ignore_sigint=ignore_sigint))
        return workers[-1]

    def stop_workers() -> None:
        while workers:
            stop_process(workers.pop())

    try:
        yield {
            "use": use,
            "start_worker": start_worker,
            "stop_workers": stop_workers,
            "receiver": receiver,
            "logs": tmp_path,
            "providers": fake_providers,
        }
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
