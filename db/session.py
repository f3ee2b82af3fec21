"""Engines and sessions. One engine per database URL per process."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from media_pipeline.settings import get_settings

T = TypeVar("T")
logger = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy's default driver is psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def get_engine(url: str | None = None) -> Engine:
    """The engine of ``url`` (default: ``DATABASE_URL``), created once per process."""
    return _engine(normalise_url(url or get_settings().database.url))


@lru_cache(maxsize=16)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the app read while a job writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back otherwise."""
    with _sessions(get_engine(url))() as session, session.begin():
        yield session


@lru_cache(maxsize=16)
def _sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_transient(error: BaseException) -> bool:
    """A database error that another try may not meet: the server restarting or
    unreachable, a dropped connection, SQLite busy. Not a missing table or a bad query."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    if isinstance(original, psycopg.OperationalError):
        return True
    if isinstance(original, sqlite3.OperationalError):
        return any(word in str(original) for word in ("locked", "busy"))
    return False


def transaction(work: Callable[[Session], T], url: str | None = None) -> T:
    """``work(session)`` in one transaction, run again from the start while the database
    is briefly unavailable (a restart, a failover), for up to ``db_retry_seconds``.

    ``work`` must only touch the database: it may run more than once.
    """
    budget = get_settings().database.retry_seconds
    deadline = time.monotonic() + budget
    delay = 0.25
    while True:
        try:
            with session_scope(url) as session:
                return work(session)
        except DBAPIError as error:
            if not is_transient(error) or time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "database unavailable (%s); trying again in %.2f s",
                type(error.orig).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
