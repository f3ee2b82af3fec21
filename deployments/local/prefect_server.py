"""What the local server's watcher runs: Prefect's own app on uvicorn, as ``prefect server
start`` runs it, except that every SQLite transaction begins IMMEDIATE.

Prefect begins a SQLite transaction DEFERRED unless it locks rows. In WAL mode, a deferred
transaction that has read and then writes fails at once with "database is locked" when
another connection wrote in between: SQLite's busy timeout does not cover that upgrade.
Prefect answers 503 and its client tries again 2 s later. With a worker, its flow runs and
the server's own services writing at once, that was a 2 s stall in about one later photo
of three (``benchmarks/embedded.py``). Begun IMMEDIATE, a transaction waits for the lock
(busy timeout) and then runs: transactions are milliseconds long.

    python -m deployments.local.prefect_server HOST PORT
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from deployments.prefect_private import sqlite_configuration


def begin_sqlite_transactions_immediately() -> None:
    configuration = sqlite_configuration()
    deferred = configuration.begin_transaction

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    configuration.begin_transaction = begin_transaction


def serve(host: str, port: int) -> None:
    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    begin_sqlite_transactions_immediately()
    server = get_current_settings().server
    uvicorn.run(
        create_app(final=True),
        host=host,
        port=port,
        timeout_keep_alive=server.api.keepalive_timeout,
        log_level=server.logging_level.lower(),
    )


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
