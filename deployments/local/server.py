"""The embedded default's Prefect server: started by the first command that needs one,
reused by the next ones, stopped when idle.

With no ``PREFECT_API_URL``, Prefect starts a temporary server inside each command: 10 to
30 s per command, and on a loaded machine it gives up ("Timed out while attempting to
connect to ephemeral Prefect API server"). Instead the first ``process`` or ``demo`` starts
Prefect's server on 127.0.0.1 (SQLite under the data directory, see
``prefect_server.py``) in a process of its own, waits as long as it takes for it to
answer, and records its address; later commands find it at once. Beside it, a watcher stops it after
``MEDIA_PIPELINE_LOCAL_SERVER_IDLE_SECONDS`` without a command using it.
``media-pipeline server start|stop|status`` does the same by hand.

    python -m deployments.local.server DATA_DIR PORT IDLE_SECONDS   (the watcher)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from deployments.local.background import Background

# httpx and the settings are imported where used: the watcher (``watch``) starts the
# server first thing, before imports it does not need.
START_TIMEOUT = 300.0  # a loaded laptop is slow, not broken
# Variables of the command's environment the local Prefect server is not given.
NOT_FOR_THE_SERVER = ("OPENAI_", "GEMINI_", "GOOGLE_", "AWS_", "MEDIA_PIPELINE_", "DATABASE_URL")


@dataclass(frozen=True)
class LocalServer(Background):
    """Its state: {"pid", "port", "url"}; the pid is its watcher's."""

    state_name = "server.json"
    log_name = "server.log"

    @property
    def last_used(self) -> Path:
        return self.folder / "last-used"

    def healthy(self, url: str) -> bool:
        import httpx

        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def touch(self) -> None:
        self.last_used.touch()

    @property
    def auth_file(self) -> Path:
        return self.folder / "auth"

    def auth_string(self) -> str:
        """The credentials the server demands of every API call and UI page (made once,
        kept readable by their owner only): the CLI, the service and its worker send them,
        a person logs in to the UI with them."""
        from media_pipeline.kept_secrets import kept_secret

        return kept_secret(self.auth_file, prefix="media-pipeline:")

    def launch(self) -> dict[str, Any]:
        """The running server's state, launching it first when there is none (without
        waiting for it to answer: a command does its own work meanwhile)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.touch()
        return super().launch()

    def start(self) -> str:
        """The running server's API URL, starting it first when there is none."""
        url = str(self.launch()["url"])
        deadline = time.monotonic() + START_TIMEOUT
        while not self.healthy(url):
            if self.state() is None or time.monotonic() > deadline:
                log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the local Prefect server did not start:\n{log}")
            self.touch()  # waiting for it is using it
            time.sleep(0.5)
        self.touch()
        return url

    def command(self, port: int) -> tuple[list[str], dict[str, str], dict[str, Any]]:
        from media_pipeline.settings import get_settings

        idle = get_settings().orchestration.local_server_idle_seconds
        args = [sys.executable, "-m", "deployments.local.server", str(self.folder), str(port)]
        # Nothing the server does not need: no provider key, no database password.
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_FOR_THE_SERVER)}
        return [*args, str(idle)], env, {"port": port, "url": f"http://127.0.0.1:{port}/api"}

    def stop(self, timeout: float = 30) -> bool:
        """Stop the server; False when none was running."""
        return super().stop(timeout)


def local_server() -> LocalServer:
    """The data dir's local server: every local service of the data dir uses it, each
    with a work pool of its own (see ``deployments/local/service.py``)."""
    from media_pipeline.settings import get_settings

    return LocalServer(get_settings().storage.data_dir / "prefect-server")


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """Run the block against the configured Prefect server, or else the local one
    (started when needed, kept awake while the block runs)."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        get_current_settings,
        temporary_settings,
    )

    from media_pipeline.settings import get_settings

    if get_current_settings().api.url or not get_settings().orchestration.local_server:
        yield
        return
    server = local_server()
    url = server.start()
    done = threading.Event()

    def keep_awake() -> None:
        while not done.wait(30):
            server.touch()

    threading.Thread(target=keep_awake, daemon=True).start()
    try:
        with temporary_settings(
            updates={PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: server.auth_string()}
        ):
            yield
    finally:
        done.set()
        server.touch()


def database_template() -> Path:
    """An empty Prefect database, migrated for the installed Prefect and holding its block
    types (``server prepare``, run by ``make setup``): a fresh data directory starts from a
    copy of it instead of running Prefect's migrations (7 of the 12 s a first start took
    here) and registering the block types (1 s more)."""
    name = f"prefect-{version('prefect')}-blocks.db"
    return Path(sys.prefix) / "share" / "media-pipeline" / name


REGISTER_BLOCKS = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def register():
    async with await provide_database_interface().session() as session:
        await run_block_auto_registration(session=session)

asyncio.run(register())
"""


def prepare_database_template() -> Path:
    """Make the template (once per installation and Prefect version)."""
    template = database_template()
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        database = Path(scratch) / "prefect.db"
        env = {
            **os.environ,
            "PREFECT_HOME": str(Path(scratch) / "home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
        }
        env.pop("PREFECT_API_URL", None)
        for step in (  # what a server's first start does
            ["-m", "prefect", "server", "database", "upgrade", "-y"],
            ["-c", REGISTER_BLOCKS],
        ):
            subprocess.run([sys.executable, *step], env=env, check=True, capture_output=True)
        os.replace(database, template)
    return template


def seed_database(database: Path) -> bool:
    """Copy the template to ``database`` when it does not exist yet; whether it did."""
    template = database_template()
    if database.exists() or not template.exists():
        return False
    shutil.copyfile(template, database)
    return True


def watch(folder: Path, port: int, idle_seconds: float) -> None:
    """Run the local Prefect server and stop it when nobody used it for ``idle_seconds``
    (or on SIGTERM)."""
    server = LocalServer(folder)
    database = folder / "prefect.db"
    seeded = seed_database(database)
    env = {
        **os.environ,  # as ``_launch`` left it
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Closed to the machine's other users: every API call and UI page needs it.
        "PREFECT_SERVER_API_AUTH_STRING": server.auth_string(),
        # The UI asks its API there; by default it would ask port 4200.
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_AUTH_STRING", None)
    if seeded:  # the template holds them (a later start registers them once more)
        env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
    child = subprocess.Popen(
        [sys.executable, "-m", "deployments.local.prefect_server", "127.0.0.1", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(2) and child.poll() is None:
            with contextlib.suppress(OSError):
                if time.time() - server.last_used.stat().st_mtime > idle_seconds:
                    print(f"idle for {idle_seconds:.0f} s: stopping", flush=True)
                    break
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        server.state_file.unlink(missing_ok=True)


if __name__ == "__main__":
    watch(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
