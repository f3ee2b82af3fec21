"""``media-pipeline api``: the HTTP API on uvicorn.

With a Prefect server (``PREFECT_API_URL``) the API only submits; workers process. On the
embedded default (no ``PREFECT_API_URL``) it also processes what it submits: it uses the
local Prefect server (started when needed), sets up the pool and deployments there, and
runs one warm worker as its child, stopped with it. So the README's three ``curl`` calls
produce derivatives with nothing else started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from db.migrate import upgrade
from deployments.api.security import api_tokens
from deployments.local.server import prefect_api
from media_pipeline.errors import PipelineError
from media_pipeline.kept_secrets import token_file
from media_pipeline.settings import get_settings

PR_SET_PDEATHSIG = 1


def serve(host: str, port: int, idle_exit: float = 0, instance: str | None = None) -> None:
    """Serve the API; ``instance``: the settings' fingerprint of the local service it is
    (its /health answers with it, see ``deployments/local/service.py``)."""
    import uvicorn
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from deployments.api.app import create_app

    settings = get_settings()
    embedded = not get_current_settings().api.url
    if embedded and not settings.orchestration.local_server:
        raise PipelineError(
            "the API needs a Prefect server: set PREFECT_API_URL, or leave "
            "MEDIA_PIPELINE_LOCAL_SERVER on for the embedded default"
        )
    if not settings.api.tokens():
        if not embedded:  # replicas behind a load balancer must accept the same tokens
            raise PipelineError(
                "set MEDIA_PIPELINE_API_TOKENS: with a Prefect server the API "
                "takes its tokens from the environment, the same on every "
                "replica (a token file is for the embedded default)"
            )
        api_tokens(settings)
        typer.echo(f"API token (MEDIA_PIPELINE_API_TOKENS unset): {token_file(settings)}", err=True)
    upgrade()
    with prefect_api(), get_client(sync_client=True) as client:
        worker = start_embedded_worker() if embedded else None
        worker_name = embedded_worker_name() if worker else None
        # Stopped in the app's shutdown: uvicorn re-raises SIGTERM once it has shut down,
        # so nothing after uvicorn.run would run then.
        stop = (lambda: stop_worker(worker)) if worker else None
        app = create_app(client, on_shutdown=stop, worker=worker_name, instance=instance)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            proxy_headers=True,
            http="httptools",
            log_level="info",
            access_log=False,
        )
        server = uvicorn.Server(config)
        if idle_exit:
            threading.Thread(
                target=exit_when_idle, args=(server, app, idle_exit), daemon=True
            ).start()
        try:
            server.run()
        finally:
            if stop is not None:
                stop()


def exit_when_idle(server: Any, app: Any, idle_seconds: float) -> None:
    """Ask uvicorn to shut down once no request came for ``idle_seconds``."""
    while not server.should_exit:
        time.sleep(min(5.0, idle_seconds))
        if time.monotonic() - app.state.last_request > idle_seconds:
            typer.echo(f"no request for {idle_seconds:.0f} s: stopping", err=True)
            server.should_exit = True


def embedded_worker_name() -> str:
    return f"api-{os.getpid()}"


def start_embedded_worker() -> subprocess.Popen[bytes]:
    """Set up the local server's pool and deployments, then start one warm worker on it."""
    from deployments.operations.setup import prefect_client_env, setup

    setup()
    settings = get_settings()
    env = {**os.environ, **prefect_client_env()}
    log = settings.storage.data_dir / "api-worker.log"
    typer.echo(f"processing here too (embedded default); worker log: {log}", err=True)
    script = Path(sys.executable).parent / "prefect"
    args = [
        str(script),
        "worker",
        "start",
        "--pool",
        settings.orchestration.work_pool,
        "--name",
        embedded_worker_name(),
    ]
    with log.open("ab") as output:
        return subprocess.Popen(
            args,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=stop_with_parent,
        )


def stop_with_parent() -> None:
    """In the child: SIGTERM when the API process dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the worker hands its runs in flight back to the queue, then exits."""
    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(get_settings().orchestration.worker_grace_seconds + 30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
