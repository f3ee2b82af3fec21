"""Throw-away PostgreSQL databases on the local server, one per use, dropped afterwards."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DB = "test"


def start_postgres_if_needed() -> None:
    if postgres_available():
        return
    subprocess.run(
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        shell=True,
        check=False,
        capture_output=True,
    )


def postgres_available() -> bool:
    try:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_ADMIN_DB, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create a database, yield its name, drop it (with its connections) at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_ADMIN_DB, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, dbname=PG_ADMIN_DB, autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
