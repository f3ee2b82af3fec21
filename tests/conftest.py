"""Shared fixtures: app databases (SQLite and PostgreSQL), a Prefect server, media roots."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before Prefect is imported anywhere: a private home, no telemetry.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="media-pipeline-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect-home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_AUTH_STRING", None)
PREFECT_AUTH = f"operator:{os.urandom(12).hex()}"

import pytest  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.session import get_engine  # noqa: E402
from media_pipeline.settings import get_settings  # noqa: E402
from tests.support.databases import (  # noqa: E402
    postgres_available,
    scratch_database,
    start_postgres_if_needed,
)
from tests.support.fake_providers import FakeProviders  # noqa: E402
from tests.support.processes import (  # noqa: E402
    free_port,
    stop_process,
)
from tests.support.services import (  # noqa: E402
    PrivateRedis,
    PrivateSeaweed,
    start_prefect_server,
)

pytest_plugins = ["tests.support.production"]  # the production fixture

PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "GEMINI_API_KEY",
    "GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "DATABASE_URL",
    "MEDIA_ROOT",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def postgres() -> None:
    start_postgres_if_needed()
    if not postgres_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running and could not be started")


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every test gets its own data dir and media root, and no provider configured."""
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("MEDIA_PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MEDIA_PIPELINE_DATA_DIR", str(tmp_path / "data"))
    # Roomy provider limits, except in the tests of the limits themselves.
    monkeypatch.setenv("MEDIA_PIPELINE_OPENAI_CALLS_PER_MINUTE", "6000")
    monkeypatch.setenv("MEDIA_PIPELINE_GEMINI_CALLS_PER_MINUTE", "6000")
    get_settings.cache_clear()
    umask = os.umask(0o022)  # a command run in-process may make files private (077)
    os.umask(umask)
    yield tmp_path
    os.umask(umask)
    get_settings.cache_clear()


def migrated_database(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point DATABASE_URL at ``url``, migrate it, and release its connections afterwards."""
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    upgrade(url)
    yield url
    get_engine(url).dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated, empty app database: a SQLite file, then a PostgreSQL database."""
    yield request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_app_db")


@pytest.fixture
def postgres_app_db(postgres: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated PostgreSQL app database of its own, dropped afterwards."""
    with scratch_database("mp_app") as name:
        yield from migrated_database(
            f"postgresql+psycopg://root@127.0.0.1:5432/{name}", monkeypatch
        )


@pytest.fixture(scope="session")
def redis_url(session_dir: Path) -> Iterator[str]:
    """The Redis of the session's Prefect server: ``MEDIA_PIPELINE_TEST_REDIS_URL`` when
    set (used as it is, never wiped), else a redis-server of the session's own, so that
    two test sessions on one machine never share streams or keys."""
    configured = os.environ.get("MEDIA_PIPELINE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(session_dir / "redis").start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def seaweed(session_dir: Path) -> Iterator[PrivateSeaweed]:
    """A SeaweedFS server of the session's own, answering S3 (buckets per test)."""
    try:
        server = PrivateSeaweed(session_dir / "seaweed").start()
    except FileNotFoundError as missing:
        pytest.skip(f"no S3 server: {missing}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_storage(seaweed: PrivateSeaweed, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The pipeline on a fresh bucket of the session's S3 server; the settings it uses."""
    env = seaweed.env(f"media-{os.urandom(4).hex()}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return env


@pytest.fixture(scope="session")
def prefect_auth() -> str:
    """The session server's credentials (``user:password``), as production runs it."""
    return PREFECT_AUTH


@pytest.fixture(scope="session")
def prefect_server(session_dir: Path, postgres: None, redis_url: str) -> Iterator[str]:
    """One Prefect server for the whole session, on PostgreSQL, on a free port, with
    Prefect's authentication on: this process, the workers and every command it starts
    send ``PREFECT_API_AUTH_STRING``."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with scratch_database("mp_prefect") as name:
        port = free_port()
        database = f"postgresql+asyncpg://root@127.0.0.1:5432/{name}"
        log = session_dir / "prefect-server.log"
        # The UI too: tests/test_ui.py opens it in Chromium.
        server = start_prefect_server(
            database, redis_url, log, port, ui=True, auth_string=PREFECT_AUTH
        )
        os.environ["PREFECT_API_AUTH_STRING"] = PREFECT_AUTH  # for the processes we start
        url = f"http://127.0.0.1:{port}/api"
        try:
            with temporary_settings(
                updates={PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: PREFECT_AUTH}
            ):
                yield url
                APILogWorker.drain_all(timeout=10)  # send buffered run logs while the server is up
        finally:
            stop_process(server)


@pytest.fixture
def sqlite_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated SQLite app database only (for tests whose subject is not the database)."""
    yield from migrated_database(
        f"sqlite:///{get_settings().storage.data_dir / 'app.db'}", monkeypatch
    )


@pytest.fixture
def fast_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that notice a stranded run in seconds, not the production minute."""
    monkeypatch.setenv("MEDIA_PIPELINE_STALL_SECONDS", "6")
    monkeypatch.setenv("MEDIA_PIPELINE_RECONCILE_SECONDS", "1")
    monkeypatch.setenv("MEDIA_PIPELINE_WORKER_HEARTBEAT_SECONDS", "2")
    get_settings.cache_clear()


@pytest.fixture
def fake_providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviders]:
    """OpenAI and Gemini stand-ins on 127.0.0.1, configured as the pipeline's providers."""
    server = FakeProviders().start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-key-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test-secret-key-9876543210")
    monkeypatch.setenv("GEMINI_BASE_URL", server.url)
    get_settings.cache_clear()
    yield server
    server.stop()
